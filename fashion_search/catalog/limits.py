"""Limits every layer shares (repositories, services, REST, GraphQL)."""

from __future__ import annotations

from fashion_search.errors import InvalidArgumentError

#: Most results one search returns.
MAX_K = 100
#: Most ranked candidates one search looks at (for facets, re-ranking and collapse).
MAX_CANDIDATES = 1000
#: A cosine similarity's range: what a relevance cutoff (minScore) may be.
MIN_SIMILARITY, MAX_SIMILARITY = -1.0, 1.0
#: Most products one listing page returns.
MAX_PAGE_SIZE = 1000
#: Longest search query (or query term) in characters.
MAX_QUERY_CHARS = 2000


def check_k(k: int) -> None:
    """InvalidArgumentError unless ``1 <= k <= MAX_K``."""
    if not 1 <= k <= MAX_K:
        raise InvalidArgumentError(f"k must be between 1 and {MAX_K}, got {k}")


def check_candidates(n: int) -> None:
    """InvalidArgumentError unless ``1 <= n <= MAX_CANDIDATES``."""
    if not 1 <= n <= MAX_CANDIDATES:
        raise InvalidArgumentError(f"candidates must be between 1 and {MAX_CANDIDATES}, got {n}")


#: Longest prefix suggestions complete, and most completions one call returns.
MAX_PREFIX_CHARS = 100
MAX_SUGGESTIONS = 20


def check_prefix(prefix: str) -> None:
    """InvalidArgumentError unless ``prefix`` has 1..MAX_PREFIX_CHARS characters, not all
    blank, and no NUL."""
    if not prefix.strip() or len(prefix) > MAX_PREFIX_CHARS:
        raise InvalidArgumentError(
            f"prefix must have 1 to {MAX_PREFIX_CHARS} characters, got {len(prefix)}"
        )
    check_text(prefix, "prefix")


def check_suggestion_limit(limit: int) -> None:
    """InvalidArgumentError unless ``1 <= limit <= MAX_SUGGESTIONS``."""
    if not 1 <= limit <= MAX_SUGGESTIONS:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_SUGGESTIONS}, got {limit}")


#: Largest product id (PostgreSQL's ``bigint``).
MAX_PRODUCT_ID = 2**63 - 1
#: Longest filter value.
MAX_FILTER_VALUE_CHARS = 200
#: Range of an integer column (PostgreSQL's ``integer``): filters outside it match nothing and
#: are refused rather than sent.
MIN_INTEGER, MAX_INTEGER = -(2**31), 2**31 - 1
#: Text without NUL characters (PostgreSQL text cannot hold them), as a JSON-schema pattern.
NO_NUL_PATTERN = r"^[^\x00]*$"


def check_text(value: str, what: str) -> str:
    """InvalidArgumentError when ``value`` holds a NUL character."""
    if "\x00" in value:
        raise InvalidArgumentError(f"{what} must not contain NUL characters")
    return value
