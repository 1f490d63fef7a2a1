"""Accuracy of upload classification: held-out products classified as if uploaded (embedded
by the model server, labels voted by their nearest labelled catalog products), with every
held-out product kept out of the voters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic.alias_generators import to_camel

from fashion_search.catalog.models import ProductFields
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.vote import vote
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.ingest.classify import CONFIDENT, PREDICTED_LABELS


@dataclass(frozen=True)
class LabelAccuracy:
    """One label's accuracy, mean confidence, and the accuracy and coverage of the predictions
    with confidence >= CONFIDENT."""

    accuracy: float
    mean_confidence: float
    confident_accuracy: float
    confident_coverage: float


def classification_accuracy(
    catalog: Catalog,
    client: EmbeddingClient,
    products: Sequence[tuple[ProductFields, bytes]],
    exclude_ids: Iterable[int],
    k: int = 10,
    batch_size: int = 64,
) -> dict[str, LabelAccuracy]:
    """Per label (camelCase): its :class:`LabelAccuracy`."""
    excluded = set(exclude_ids) | {fields.id for fields, _ in products}
    hits: dict[str, list[tuple[bool, float]]] = {label: [] for label in PREDICTED_LABELS}
    version = catalog.versions.serving()
    for start in range(0, len(products), batch_size):
        batch = products[start : start + batch_size]
        images = [image for _, image in batch]
        vectors = client.embed_images(images, version=version.model_version).vectors
        for (fields, _), near in zip(
            batch, catalog.vectors.labelled_neighbours(version, vectors, k, excluded), strict=True
        ):
            predicted = vote([n.product for n in near], [n.score for n in near], PREDICTED_LABELS)
            for label, prediction in predicted.items():
                hits[label].append(
                    (prediction.value == getattr(fields, label), prediction.confidence)
                )
    report = {}
    for label, outcomes in hits.items():
        confident = [correct for correct, confidence in outcomes if confidence >= CONFIDENT]
        n = max(len(outcomes), 1)
        report[to_camel(label)] = LabelAccuracy(
            accuracy=sum(correct for correct, _ in outcomes) / n,
            mean_confidence=sum(confidence for _, confidence in outcomes) / n,
            confident_accuracy=sum(confident) / max(len(confident), 1),
            confident_coverage=len(confident) / n,
        )
    return report
