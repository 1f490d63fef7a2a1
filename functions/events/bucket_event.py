"""The bucket-event function: S3 object-created and object-removed notifications in (directly,
through SQS, or through Kafka); classified catalog products (or a removed one) out on the
output topic, and a dead-letter record (reason + original event) for every event it gives up
on.

Return value: SQS invocations get ``{"batchItemFailures": [...]}`` (partial batch response);
an error the function cannot settle (database or Kafka down) fails the SQS messages of the
batch, and raises for the other sources, so the event source delivers them again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.ingest.events import (
    MalformedEventError,
    ObjectCreated,
    ObjectEvent,
    ObjectRemoved,
    parse_notification,
)
from fashion_search.ingest.messages import DeadLetter, UploadProcessed
from fashion_search.ingest.processor import Failure, UploadProcessor
from fashion_search.ingest.publisher import KafkaPublisher
from fashion_search.settings import get_settings
from fashion_search.storage import ObjectStore
from functions.events.envelopes import Delivery, unwrap

log = logging.getLogger(__name__)


class BucketEventFunction:
    """Callable with the Lambda handler's event; keeps its clients between invocations."""

    def __init__(self, processor: UploadProcessor, publisher: KafkaPublisher) -> None:
        self.processor = processor
        self.publisher = publisher

    def __call__(self, event: Mapping[str, Any]) -> dict[str, Any]:
        kind, deliveries = unwrap(event)
        try:
            counts = self._handle(deliveries)
        except Exception:
            if kind != "sqs":
                raise
            log.exception("batch of %d SQS messages failed; they will be retried", len(deliveries))
            return {"batchItemFailures": [{"itemIdentifier": d.id} for d in deliveries]}
        log.info("processed %d deliveries: %s", len(deliveries), dict(counts))
        return {"batchItemFailures": []} if kind == "sqs" else dict(counts)

    def _handle(self, deliveries: list[Delivery]) -> Counter[str]:
        counts: Counter[str] = Counter()
        objects: list[tuple[Delivery, ObjectEvent]] = []
        for delivery in deliveries:
            try:
                objects.extend((delivery, o) for o in parse_notification(delivery.body))
            except MalformedEventError as error:
                self.publisher.dead_letter(
                    DeadLetter(reason="malformed-event", error=str(error),
                               source=delivery.source, original_event=delivery.body)
                )  # fmt: skip
                counts["dead-letter"] += 1
        created = [(d, o) for d, o in objects if isinstance(o, ObjectCreated)]
        for _, obj in objects:
            if isinstance(obj, ObjectRemoved):
                removed = self.processor.remove(obj)
                self.publisher.processed(removed)
                counts[removed.status] += 1
        outcomes = self.processor.process([o for _, o in created])
        for (delivery, obj), outcome in zip(created, outcomes, strict=True):
            if isinstance(outcome, UploadProcessed):
                self.publisher.processed(outcome)
                counts[outcome.status] += 1
                continue
            self.publisher.dead_letter(_dead_letter(delivery, obj, outcome))
            counts["dead-letter"] += 1
        self.publisher.flush()
        return counts


def _dead_letter(delivery: Delivery, obj: ObjectCreated, failure: Failure) -> DeadLetter:
    return DeadLetter(
        reason=failure.reason,
        error=failure.error,
        bucket=obj.bucket,
        key=obj.key,
        e_tag=obj.etag,
        source=delivery.source,
        original_event=delivery.body,
    )


@lru_cache(maxsize=1)
def get_bucket_event_function() -> BucketEventFunction:
    """The function on the configured catalog, object store, model server and Kafka (built on
    first use and reused across invocations, as a Lambda container would)."""
    settings = get_settings()
    processor = UploadProcessor(
        settings,
        Catalog.of(create_pool(settings)),
        ObjectStore(settings),
        EmbeddingClient(settings.model_server.address),
    )
    return BucketEventFunction(processor, KafkaPublisher(settings))
