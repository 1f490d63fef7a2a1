"""The bucket-event function: S3 object-created and object-removed notifications in (directly,
through SQS, or through Kafka); classified catalog products (or a removed one) out on the
output topic, and a dead-letter record (reason + original event) for every event that can
never succeed (see :class:`~fashion_search.ingest.processor.Failure`).

A dependency's transient error (:func:`fashion_search.faults.is_transient`) makes the function
try the batch again with exponential backoff for up to ``FS_INGEST_RETRY_BUDGET_S``; past it,
SQS invocations report every message of the batch in ``batchItemFailures`` (partial batch
response: redelivered after the visibility timeout) and the other sources get the error
raised, so that they deliver the batch again. Nothing transient is ever dead-lettered.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, TypeVar

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.faults import backoff, is_transient
from fashion_search.ingest.events import (
    MalformedEventError,
    ObjectCreated,
    ObjectRemoved,
    parse_notification,
)
from fashion_search.ingest.messages import DeadLetter, UploadProcessed
from fashion_search.ingest.processor import Failure, UploadProcessor
from fashion_search.ingest.publisher import KafkaPublisher
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import ObjectStore
from functions.events.envelopes import Delivery, unwrap

log = logging.getLogger(__name__)

T = TypeVar("T")


class BucketEventFunction:
    """Callable with the Lambda handler's event; keeps its clients between invocations."""

    def __init__(
        self,
        processor: UploadProcessor,
        publisher: KafkaPublisher,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.processor = processor
        self.publisher = publisher
        self.settings = processor.settings
        self._sleep = sleep

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
        letters: list[DeadLetter] = []
        created: list[tuple[Delivery, ObjectCreated]] = []
        removed: list[ObjectRemoved] = []
        for delivery in deliveries:
            try:
                for obj in parse_notification(delivery.body):
                    if isinstance(obj, ObjectRemoved):
                        removed.append(obj)
                    else:
                        created.append((delivery, obj))
            except MalformedEventError as error:
                letters.append(
                    DeadLetter(reason="malformed-event", error=str(error),
                               source=delivery.source, original_event=delivery.body)
                )  # fmt: skip
        processed, outcomes = self._retrying(
            lambda: (
                [self.processor.remove(obj) for obj in removed],
                self.processor.process([obj for _, obj in created]),
            )
        )
        for (delivery, obj), outcome in zip(created, outcomes, strict=True):
            if isinstance(outcome, UploadProcessed):
                processed.append(outcome)
            else:
                letters.append(_dead_letter(delivery, obj, outcome))
        for message in processed:
            self.publisher.processed(message)
        for letter in letters:
            self.publisher.dead_letter(letter)
        self.publisher.flush()
        counts: Counter[str] = Counter(message.status for message in processed)
        if letters:
            counts["dead-letter"] = len(letters)
        return counts

    def _retrying(self, work: Callable[[], T]) -> T:
        """``work()``, tried again with backoff on a transient error while the retry budget
        lasts; the last error is raised past it."""
        ingest = self.settings.ingest
        deadline = time.monotonic() + ingest.retry_budget_s
        for attempt in itertools.count(1):
            try:
                return work()
            except Exception as error:
                delay = backoff(attempt, ingest.retry_base_s, ingest.retry_max_s)
                if not is_transient(error) or time.monotonic() + delay > deadline:
                    raise
                log.warning("a dependency failed (%s); try %d in %.1f s", error, attempt + 1, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises


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


def build_bucket_event_function(settings: Settings) -> BucketEventFunction:
    """The function on the catalog, object store, model server and Kafka of ``settings``."""
    processor = UploadProcessor(
        settings,
        Catalog.of(create_pool(settings)),
        ObjectStore(settings),
        EmbeddingClient(settings.model_server.address),
    )
    return BucketEventFunction(processor, KafkaPublisher(settings))


@lru_cache(maxsize=1)
def get_bucket_event_function() -> BucketEventFunction:
    """The function on the configured dependencies (built on first use and reused across
    invocations, as a Lambda container would)."""
    return build_bucket_event_function(get_settings())
