"""Facet counts: how many products have each value of each metadata field.

Searches count over their ranked candidates (:func:`count_facets`); listings count over every
matching product in the database (``ProductRepository.facet_counts``). Both answer
:data:`FacetCounts`, keyed by the wire (camelCase) name, values by count then value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from pydantic.alias_generators import to_camel

from fashion_search.catalog.models import METADATA_FIELDS, Product


@dataclass(frozen=True)
class FacetCount:
    """One value of a field and how many products have it."""

    value: str | int
    count: int


#: camelCase field name -> its values, most frequent first (ties by value).
FacetCounts: TypeAlias = dict[str, list[FacetCount]]


def sort_counts(counts: Iterable[tuple[str | int, int]]) -> list[FacetCount]:
    """``(value, count)`` pairs as FacetCounts' order: most frequent first, ties by value."""
    return [FacetCount(v, n) for v, n in sorted(counts, key=lambda pair: (-pair[1], str(pair[0])))]


def count_facets(products: Iterable[Product]) -> FacetCounts:
    """Counts of every metadata field's values over ``products`` (missing values not counted)."""
    counters: dict[str, Counter[str | int]] = {name: Counter() for name in METADATA_FIELDS}
    for product in products:
        for name, counter in counters.items():
            value = getattr(product, name)
            if value is not None:
                counter[value] += 1
    return {to_camel(name): sort_counts(counter.items()) for name, counter in counters.items()}
