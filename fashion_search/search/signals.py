"""Business signals in the ranking: popularity, newness and the merchandising boost, each
weighted (``settings.signals``, 0 = off) and added to a candidate's relevance score
(:mod:`fashion_search.search.ranking`).

- popularity: ``p / (p + POPULARITY_HALF)`` of the product's decayed clicks and add-to-carts
  (:mod:`fashion_search.catalog.signals`): the first signals count most, none saturates it;
- newness: ``0.5 ** (age / half-life)`` of how long ago the product entered the catalog;
- boost: the merchandiser's, -1 to 1.

Each is at most 1 in size, so a candidate can pass only those whose relevance is within the
weights' sum (the boost's twice) of its own: small weights re-order near-equals and never lift
a clearly worse match over a better one (what the defaults cost on the judged queries:
``python -m bench.signals``). With any signal on, a search ranks its re-ranked candidates
(``settings.search.rerank_candidates``), not only the first k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from fashion_search.catalog.models import Product
from fashion_search.catalog.signals import StoredSignals
from fashion_search.settings import SignalSettings

Array = np.ndarray[Any, Any]
#: The decayed signal count at which popularity is 0.5.
POPULARITY_HALF = 5.0
_DAY_S = 86_400.0


@dataclass(frozen=True)
class SignalWeights:
    """Each signal's weight (0 = off) and the half-lives of popularity and newness."""

    popularity: float
    newness: float
    boost: float
    popularity_half_life_s: float
    newness_half_life_s: float

    @classmethod
    def of(cls, settings: SignalSettings) -> SignalWeights:
        """The weights the settings give."""
        return cls(
            settings.popularity_weight, settings.newness_weight, settings.boost_weight,
            settings.popularity_half_life_days * _DAY_S, settings.newness_half_life_days * _DAY_S,
        )  # fmt: skip

    @property
    def on(self) -> bool:
        """Whether any signal is on."""
        return self.stored or self.newness > 0

    @property
    def stored(self) -> bool:
        """Whether a search reads the catalog's signals (popularity or boosts are on)."""
        return self.popularity > 0 or self.boost > 0


def contributions(
    products: Sequence[Product],
    stored: Mapping[int, StoredSignals],
    weights: SignalWeights,
    now: datetime,
) -> dict[str, Array]:
    """Signal name -> its weighted contribution to each of ``products``' scores, for the
    signals that are on (``stored``: what the catalog holds about them)."""
    found: dict[str, Array] = {}
    if weights.popularity > 0:
        counts = np.array([stored[p.id].popularity if p.id in stored else 0.0 for p in products])
        found["popularity"] = weights.popularity * counts / (counts + POPULARITY_HALF)
    if weights.newness > 0:
        ages = np.array(
            [(now - p.created_at).total_seconds() if p.created_at else np.inf for p in products]
        )
        halvings = np.maximum(ages, 0) / weights.newness_half_life_s
        found["newness"] = weights.newness * 0.5**halvings
    if weights.boost > 0:
        boosts = np.array([stored[p.id].boost if p.id in stored else 0.0 for p in products])
        found["boost"] = weights.boost * boosts
    return found
