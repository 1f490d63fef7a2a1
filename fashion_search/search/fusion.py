"""Reciprocal rank fusion of ranked lists (Cormack et al., 2009).

Hybrid search fuses in the database (:meth:`CatalogRepository.nearest_fused
<fashion_search.catalog.repository.CatalogRepository.nearest_fused>`, one round trip); this is
the definition it is tested against.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

#: The constant of the original paper; damps the weight of the very first ranks.
RRF_K = 60


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]], k: int = RRF_K
) -> list[tuple[K, float]]:
    """Items of every ranking by their summed ``1 / (k + rank)``, best first (ties: first seen)."""
    scores: dict[K, float] = defaultdict(float)
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] += 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
