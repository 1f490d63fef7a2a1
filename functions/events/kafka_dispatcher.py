"""Kafka consumer group -> the bucket-event function, like a Lambda event-source mapping.

Polls a batch (the first message, then whatever arrives within the batch window), invokes the
function with a Kafka event-source event, and commits the batch's offsets only after the
function returned. While a dependency is down (the function raises a transient error, see
:func:`fashion_search.faults.is_transient`) consumption stops: the same batch is invoked again
with backoff until it succeeds, nothing is committed or dead-lettered meanwhile. A batch that
keeps failing with an error of its own is split, and a message that fails alone is
dead-lettered with the error, so a poison message never blocks its partition. A second copy
of a message settled lately (MinIO sends each event twice, see
:mod:`functions.events.recent_messages`) is committed without an invocation.

A consumer can lose its group for good when the broker restarts (seen in the soak: the group
empty, the consumer polling nothing, events piling up). When nothing has arrived for
``stall_s`` (STALL_S) while the group's committed offsets lag behind the topic, twice in a row
with the same offsets, the dispatcher raises :class:`DispatcherStalledError` and exits, for
its supervisor to start it afresh.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from fashion_search.faults import backoff, is_transient
from fashion_search.ingest.messages import DeadLetter
from fashion_search.ingest.publisher import KafkaPublisher, kafka_config
from fashion_search.settings import Settings
from fashion_search.telemetry.metrics import INGEST_CONSUMER_LAG
from functions.events.envelopes import kafka_event
from functions.events.recent_messages import RecentMessages

log = logging.getLogger(__name__)

#: Seconds without a message after which the dispatcher checks whether its group is stalled.
STALL_S = 60.0


class DispatcherStalledError(RuntimeError):
    """The group's offsets lag behind the topic and do not move, and nothing arrives."""


Function = Callable[[Mapping[str, Any]], Any]


class KafkaDispatcher:
    """Consumes ``settings.kafka.uploads_topic`` as group ``settings.ingest.group_id``."""

    def __init__(self, settings: Settings, function: Function, publisher: KafkaPublisher) -> None:
        self.settings = settings
        self.function = function
        self.publisher = publisher
        self.stall_s = STALL_S
        self.recent = RecentMessages()
        self.consumer = Consumer(
            kafka_config(
                settings,
                {
                    "group.id": settings.ingest.group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 50,
                    "session.timeout.ms": 10_000,
                    # A batch may wait out a dependency's outage; past this the consumer leaves
                    # the group and rejoins at its next poll (the batch is then redelivered).
                    "max.poll.interval.ms": 900_000,
                    "log_level": 4,
                },
            )
        )

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set; the batch in hand is finished and committed first,
        unless it is waiting for a dependency (then it comes again after a restart)."""
        self.consumer.subscribe([self.settings.kafka.uploads_topic])
        log.info("dispatching %s to the bucket-event function", self.settings.kafka.uploads_topic)
        quiet_since, lag = time.monotonic(), None
        try:
            while not stop.is_set():
                batch = self._next_batch()
                self._report_lag()
                if batch:
                    new = self.recent.new(batch)
                    try:
                        if new:
                            self._dispatch(new, stop)
                    except _StopRequestedError:
                        break
                    self.recent.settled(new)
                    self._commit(batch)
                    quiet_since, lag = time.monotonic(), None
                elif time.monotonic() - quiet_since > self.stall_s:
                    lag, previous = self._lag(), lag
                    if lag and lag == previous:
                        raise DispatcherStalledError(
                            f"nothing arrived for {2 * self.stall_s:.0f} s while the group lags"
                            f" behind {self.settings.kafka.uploads_topic} (committed, end: {lag})"
                        )
                    quiet_since = time.monotonic()
        finally:
            self.consumer.close()  # leaves the group at once: partitions move without waiting
            log.info("dispatcher stopped")

    def _lag(self) -> dict[int, tuple[int, int]] | None:
        """Partition -> (committed offset, end) where the group lags behind the topic; None
        when the broker cannot say now (then nothing is decided)."""
        topic = self.settings.kafka.uploads_topic
        try:
            partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
            committed = self.consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=10
            )
            ends = {
                tp.partition: self.consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in committed
            }
        except KafkaException as error:
            log.warning("could not read the group's lag: %s", error)
            return None
        return {
            tp.partition: (tp.offset, ends[tp.partition])
            for tp in committed
            if max(tp.offset, 0) < ends[tp.partition]
        }

    def _report_lag(self) -> None:
        """Set ``fashion_search_ingest_consumer_lag`` of each assigned partition: the end of
        the partition (as last fetched, no broker call) minus this consumer's position."""
        try:
            assigned = self.consumer.position(self.consumer.assignment())
            lags = {
                tp.partition: self.consumer.get_watermark_offsets(tp, cached=True)[1]
                - max(tp.offset, 0)
                for tp in assigned
            }
        except KafkaException:
            return
        INGEST_CONSUMER_LAG.clear()
        for partition, lag in lags.items():
            INGEST_CONSUMER_LAG.labels(str(partition)).set(max(lag, 0))

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

    def _dispatch(self, batch: list[Message], stop: threading.Event) -> None:
        """Invoke the function with ``batch`` until it is settled (then it may be committed);
        _StopRequestedError when ``stop`` is set while it waits for a dependency."""
        if self._settle(batch, stop, self.settings.ingest.invoke_attempts) is None:
            return
        for message in batch:  # isolate the poison message(s)
            error = self._settle([message], stop, 1)
            if error is not None:
                log.error("message %s failed alone; dead-lettered", _position(message))
                self.publisher.dead_letter(
                    DeadLetter(
                        reason="function-error",
                        error=f"{type(error).__name__}: {error}",
                        source=_position(message),
                        original_event=(message.value() or b"").decode(errors="replace"),
                    )
                )
        self.publisher.flush()

    def _settle(
        self, batch: list[Message], stop: threading.Event, attempts: int
    ) -> Exception | None:
        """Invoke until it returns (None), for as long as it fails transiently, and up to
        ``attempts`` times when it fails otherwise (that error is returned)."""
        ingest = self.settings.ingest
        failures = 0
        for attempt in itertools.count(1):
            try:
                self._invoke(batch)
                return None
            except Exception as error:
                transient = is_transient(error)
                failures += not transient
                if failures >= attempts:  # only an error of its own counts
                    return error
                delay = backoff(attempt, ingest.retry_base_s, ingest.retry_max_s)
                if transient:
                    log.warning(
                        "a dependency is down (%s: %s); consumption waits %.1f s and tries the"
                        " %d-message batch again", type(error).__name__, error, delay, len(batch),
                    )  # fmt: skip
                else:
                    log.exception("invocation %d of a %d-message batch failed", attempt, len(batch))
            if stop.wait(delay):
                raise _StopRequestedError
        raise AssertionError("unreachable")  # the loop returns or raises

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
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
                asynchronous=False,
            )
        except KafkaException as error:  # a rebalance took the partitions, or the broker is
            # away: the batch comes again (to this consumer or another), and is a duplicate then
            log.warning("commit failed (%s); the batch will be delivered again", error)


class _StopRequestedError(Exception):
    """The dispatcher was asked to stop while a batch waited to be invoked again."""


def _position(message: Message) -> dict[str, Any]:
    return {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()}
