"""Kafka consumer group -> the bucket-event function, like a Lambda event-source mapping.

Polls a batch (the first message, then whatever arrives within the batch window), invokes the
function with a Kafka event-source event, and commits the batch's offsets only after the
function returned. A batch whose invocation keeps failing is split, and a message that fails
alone is dead-lettered with the error, so a poison message never blocks its partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from fashion_search.ingest.messages import DeadLetter
from fashion_search.ingest.processor import retry_delay
from fashion_search.ingest.publisher import KafkaPublisher
from fashion_search.settings import Settings
from functions.events.envelopes import kafka_event

log = logging.getLogger(__name__)

Function = Callable[[Mapping[str, Any]], Any]


class KafkaDispatcher:
    """Consumes ``settings.kafka.uploads_topic`` as group ``settings.ingest.group_id``."""

    def __init__(self, settings: Settings, function: Function, publisher: KafkaPublisher) -> None:
        self.settings = settings
        self.function = function
        self.publisher = publisher
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap,
                "group.id": settings.ingest.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
                "session.timeout.ms": 10_000,
                "max.poll.interval.ms": 900_000,  # a batch may wait out model-server retries
                "log_level": 4,
            }
        )

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set; the batch in hand is finished and committed first."""
        self.consumer.subscribe([self.settings.kafka.uploads_topic])
        log.info("dispatching %s to the bucket-event function", self.settings.kafka.uploads_topic)
        try:
            while not stop.is_set():
                batch = self._next_batch()
                if batch:
                    self._dispatch(batch)
                    self._commit(batch)
        finally:
            self.consumer.close()  # leaves the group at once: partitions move without waiting
            log.info("dispatcher stopped")

    def _next_batch(self) -> list[Message]:
        first = self.consumer.poll(0.5)
        if first is None:
            return []
        rest = self.consumer.consume(
            self.settings.ingest.batch_size - 1, self.settings.ingest.batch_window_ms / 1000
        )
        batch = []
        for message in [first, *rest]:
            error = message.error()
            if error is None:
                batch.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
        return batch

    def _dispatch(self, batch: list[Message]) -> None:
        for attempt in range(1, self.settings.ingest.invoke_attempts + 1):
            try:
                self._invoke(batch)
                return
            except Exception:
                log.exception("invocation %d of a %d-message batch failed", attempt, len(batch))
                time.sleep(retry_delay(self.settings, attempt))
        for message in batch:  # isolate the poison message(s)
            try:
                self._invoke([message])
            except Exception as error:
                log.exception("message %s failed alone; dead-lettered", _position(message))
                self.publisher.dead_letter(
                    DeadLetter(
                        reason="function-error",
                        error=f"{type(error).__name__}: {error}",
                        source=_position(message),
                        original_event=(message.value() or b"").decode(errors="replace"),
                    )
                )
        self.publisher.flush()

    def _invoke(self, batch: list[Message]) -> None:
        records = [
            {**_position(m), "timestamp": m.timestamp()[1], "key": m.key(), "value": m.value()}
            for m in batch
        ]
        self.function(kafka_event(records, self.settings.kafka.bootstrap))

    def _commit(self, batch: list[Message]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for m in batch:
            position = (str(m.topic()), int(m.partition() or 0))
            next_offsets[position] = max(next_offsets.get(position, 0), int(m.offset() or 0) + 1)
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
            asynchronous=False,
        )


def _position(message: Message) -> dict[str, Any]:
    return {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()}
