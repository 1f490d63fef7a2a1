"""Label prediction for an upload from its nearest labelled catalog products: a (near-)duplicate
of a catalog product takes that product's labels; any other image gets a vote of its
neighbours, each weighted by a softmax of its similarity at ``temperature``.

A duplicate is the nearest neighbour at cosine at least ``duplicate_similarity``, or a
neighbour whose image fingerprint is near-identical to the upload's, or to its mirror image
(:func:`fashion_search.search.collapse.near_identical`). The fingerprint does not depend on the
model: the default model puts a photo re-encoded as JPEG below cosine 0.90 of its original
three times in four, where held-out products reach 0.91 (decision 0039). Both rules and the
temperature are measured on held-out data by ``bench.labels``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fashion_search.catalog.models import Neighbor
from fashion_search.catalog.vote import Prediction, vote
from fashion_search.search.collapse import near_identical

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
    neighbours: Sequence[Neighbor],
    rule: LabelRule,
    labels: Sequence[str] = PREDICTED_LABELS,
    image_fingerprint: bytes | None = None,
) -> dict[str, Prediction]:
    """An upload's labels from its labelled ``neighbours`` (nearest first) under ``rule``; with
    the upload's ``image_fingerprint``, a neighbour with a near-identical one is a duplicate."""
    original = duplicate_of(neighbours, rule, image_fingerprint)
    if original is not None:
        return {label: Prediction(getattr(original.product, label), 1.0) for label in labels}
    return vote(
        [n.product for n in neighbours], [n.score for n in neighbours], labels, rule.temperature
    )


def duplicate_of(
    neighbours: Sequence[Neighbor], rule: LabelRule, image_fingerprint: bytes | None = None
) -> Neighbor | None:
    """The neighbour the upload is a duplicate of, if any: the nearest at cosine at least
    ``rule.duplicate_similarity``, else the nearest with a near-identical fingerprint."""
    if neighbours and neighbours[0].score >= rule.duplicate_similarity:
        return neighbours[0]
    if image_fingerprint is None:
        return None
    return next(
        (
            n
            for n in neighbours
            if n.product.image_fingerprint is not None
            and near_identical(image_fingerprint, n.product.image_fingerprint)
        ),
        None,
    )
