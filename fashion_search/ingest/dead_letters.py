"""The dead-letter topic read back (by reason and time) and its events replayed through the
bucket-event function: idempotently, so an event already processed comes back ``duplicate``."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError

from fashion_search.ingest.publisher import kafka_config
from fashion_search.settings import Settings


@dataclass(frozen=True)
class StoredDeadLetter:
    """A dead-letter record as the topic holds it (camelCase fields) and where."""

    partition: int
    offset: int
    record: dict[str, Any]

    @property
    def id(self) -> str:
        """``partition:offset``, what ``show`` and ``replay --id`` take."""
        return f"{self.partition}:{self.offset}"

    @property
    def failed_at(self) -> datetime:
        """When the event was given up on."""
        return datetime.fromisoformat(self.record["failedAt"])


def read_dead_letters(
    settings: Settings,
    reason: str | None = None,
    since: datetime | None = None,
    timeout_s: float = 30.0,
) -> list[StoredDeadLetter]:
    """Every record of the dead-letter topic (with ``reason``, given up on at or after
    ``since``), oldest first per partition; reads to the end without committing anything."""
    consumer = Consumer(
        kafka_config(
            settings,
            {
                "group.id": f"dead-letters-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log_level": 4,
            },
        )
    )
    consumer.subscribe([settings.kafka.dead_letter_topic])
    found: list[StoredDeadLetter] = []
    ended: set[int] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition() or 0)
                    assigned = {p.partition for p in consumer.assignment()}
                    if assigned and ended >= assigned:
                        break
                continue
            record = json.loads(message.value() or b"{}")
            letter = StoredDeadLetter(message.partition() or 0, message.offset() or 0, record)
            if (reason is None or record.get("reason") == reason) and (
                since is None or letter.failed_at >= since
            ):
                found.append(letter)
    finally:
        consumer.close()
    return found


def replay(
    function: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    letters: list[StoredDeadLetter],
) -> Counter[str]:
    """Invoke the bucket-event function with each letter's original event; the outcomes
    counted (``created``, ``duplicate``, ``dead-letter`` again, ...)."""
    counts: Counter[str] = Counter()
    for letter in letters:
        original = letter.record.get("originalEvent", "")
        try:
            event = json.loads(original)
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict):  # not an event at all: replaying cannot help
            counts["not-replayable"] += 1
            continue
        counts.update({k: int(v) for k, v in function(event).items()})
    return counts
