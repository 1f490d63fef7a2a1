"""Label prediction for an upload from its nearest labelled catalog products: a (near-)duplicate
of a catalog product (cosine at least ``duplicate_similarity``: the same photo, re-encoded,
flipped or cropped) takes that product's labels; any other image gets a vote of its
neighbours, each weighted by a softmax of its similarity at ``temperature`` (both measured on
held-out data by ``bench.labels``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fashion_search.catalog.models import Neighbor
from fashion_search.catalog.vote import Prediction, vote

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
class LabelRule:
    """How neighbours label an upload: the similarity from which the nearest is a duplicate
    (above 1: never), and the vote's softmax temperature (0: weights are the similarities)."""

    duplicate_similarity: float
    temperature: float


def predict_labels(
    neighbours: Sequence[Neighbor], rule: LabelRule, labels: Sequence[str] = PREDICTED_LABELS
) -> dict[str, Prediction]:
    """An upload's labels from its labelled ``neighbours`` (nearest first) under ``rule``."""
    if neighbours and neighbours[0].score >= rule.duplicate_similarity:
        return {label: Prediction(getattr(neighbours[0].product, label), 1.0) for label in labels}
    return vote(
        [n.product for n in neighbours], [n.score for n in neighbours], labels, rule.temperature
    )
