"""Label prediction for an upload from its nearest labelled catalog products: a (near-)duplicate
of a catalog product (cosine at least ``duplicate_similarity``: the same photo, re-encoded,
flipped or cropped) takes that product's labels; any other image gets a vote of its
neighbours, each weighted by a softmax of its similarity at ``temperature`` (both measured on
held-out data by ``bench.labels``)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from fashion_search.catalog.models import Neighbor, ProductFields

#: Labels predicted for an uploaded product (snake_case product fields).
PREDICTED_LABELS: tuple[str, ...] = (
    "master_category",
    "sub_category",
    "article_type",
    "base_colour",
    "gender",
)
#: Confidence from which a predicted label is trusted without review (and trained on).
CONFIDENT = 0.8


@dataclass(frozen=True)
class Prediction:
    """A predicted label value and its share of the neighbours' vote weight (0..1]; 1 for the
    labels of a duplicate."""

    value: str | None
    confidence: float


@dataclass(frozen=True)
class LabelRule:
    """How neighbours label an upload: the similarity from which the nearest is a duplicate
    (above 1: never), and the vote's softmax temperature (0: weights are the similarities)."""

    duplicate_similarity: float
    temperature: float


def vote(
    neighbours: Sequence[ProductFields],
    similarities: Sequence[float],
    labels: Sequence[str] = PREDICTED_LABELS,
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


def predict_labels(
    neighbours: Sequence[Neighbor], rule: LabelRule, labels: Sequence[str] = PREDICTED_LABELS
) -> dict[str, Prediction]:
    """An upload's labels from its labelled ``neighbours`` (nearest first) under ``rule``."""
    if neighbours and neighbours[0].score >= rule.duplicate_similarity:
        return {label: Prediction(getattr(neighbours[0].product, label), 1.0) for label in labels}
    return vote(
        [n.product for n in neighbours], [n.score for n in neighbours], labels, rule.temperature
    )
