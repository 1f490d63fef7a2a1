"""Limits every layer shares (repositories, services, REST, GraphQL)."""

from __future__ import annotations

from fashion_search.errors import InvalidArgumentError

#: Most results one search returns.
MAX_K = 100
#: Most products one listing page returns.
MAX_PAGE_SIZE = 1000


def check_k(k: int) -> None:
    """InvalidArgumentError unless ``1 <= k <= MAX_K``."""
    if not 1 <= k <= MAX_K:
        raise InvalidArgumentError(f"k must be between 1 and {MAX_K}, got {k}")


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
