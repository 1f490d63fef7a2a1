"""The labels a product's nearest catalog products vote for: used by ingest (an upload's
predicted labels), search (what a query image shows) and evaluation (kNN accuracy)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from fashion_search.catalog.models import ProductFields


@dataclass(frozen=True)
class Prediction:
    """A predicted label value and its share of the neighbours' vote weight (0..1]; 1 for the
    labels of a duplicate."""

    value: str | None
    confidence: float


def vote(
    neighbours: Sequence[ProductFields],
    similarities: Sequence[float],
    labels: Sequence[str],
    temperature: float = 0.0,
) -> dict[str, Prediction]:
    """Each label's value with the largest summed weight among ``neighbours``.

    Weights are ``exp(similarity / temperature)`` (normalized), or with ``temperature`` 0 the
    cosine similarities clipped at zero (all equal if none is positive); the confidence is
    the winner's share of the total weight. Ties go to the nearest neighbour's value. No
    neighbours give ``Prediction(None, 0.0)``.
    """
    if len(neighbours) != len(similarities):
        raise ValueError(f"{len(neighbours)} neighbours but {len(similarities)} similarities")
    if temperature > 0:
        top = max(similarities, default=0.0)
        weights = [math.exp((float(s) - top) / temperature) for s in similarities]
    else:
        weights = [max(float(s), 0.0) for s in similarities]
    if not any(weights):
        weights = [1.0] * len(neighbours)
    total = sum(weights)
    result = {}
    for label in labels:
        tally: dict[str | None, float] = defaultdict(float)
        for neighbour, weight in zip(neighbours, weights, strict=True):
            tally[getattr(neighbour, label)] += weight
        if not tally:
            result[label] = Prediction(None, 0.0)
            continue
        winner = max(tally, key=lambda v: tally[v])  # dicts keep order: nearest wins ties
        result[label] = Prediction(winner, tally[winner] / total)
    return result
