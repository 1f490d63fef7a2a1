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
