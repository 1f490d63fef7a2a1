"""The Lambda event shapes that carry S3 bucket notifications, unwrapped into deliveries.

- Kafka event source (``eventSource`` ``SelfManagedKafka`` / ``aws:kafka``): base64 values.
- SQS event source (``Records[].eventSource == "aws:sqs"``): the notification is the body.
- S3 invoking the function directly (``Records[].eventSource == "aws:s3"``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

EnvelopeKind = Literal["kafka", "sqs", "s3"]
KAFKA_SOURCES = ("SelfManagedKafka", "aws:kafka")


@dataclass(frozen=True)
class Delivery:
    """One message of an invocation: its id, where it came from, and its text."""

    id: str
    source: dict[str, Any]
    body: str


def unwrap(event: Mapping[str, Any]) -> tuple[EnvelopeKind, list[Delivery]]:
    """The envelope kind and its deliveries; an unknown shape is one S3 delivery of the whole
    event (so that parsing it fails with a reason and dead-letters it)."""
    if event.get("eventSource") in KAFKA_SOURCES and isinstance(event.get("records"), dict):
        return "kafka", [
            _kafka_delivery(record) for records in event["records"].values() for record in records
        ]
    records = event.get("Records")
    if (
        isinstance(records, list)
        and records
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)
    ):
        return "sqs", [
            Delivery(
                id=str(r.get("messageId", "")),
                source={"queue": r.get("eventSourceARN"), "messageId": r.get("messageId")},
                body=str(r.get("body", "")),
            )
            for r in records
        ]
    return "s3", [Delivery(id="s3", source={"direct": True}, body=json.dumps(event))]


def _kafka_delivery(record: Mapping[str, Any]) -> Delivery:
    position = {k: record.get(k) for k in ("topic", "partition", "offset")}
    try:
        body = base64.b64decode(record.get("value") or "", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        body = f"<undecodable Kafka value: {error}> {record.get('value')!r}"
    return Delivery(id=f"{position['topic']}-{position['partition']}-{position['offset']}",
                    source=position, body=body)  # fmt: skip


def kafka_event(records: list[dict[str, Any]], bootstrap: str) -> dict[str, Any]:
    """A Kafka event-source invocation event for ``records`` (topic, partition, offset,
    timestamp, key and value as bytes), grouped by topic-partition as Lambda does."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        grouped.setdefault(f"{r['topic']}-{r['partition']}", []).append(
            {
                "topic": r["topic"],
                "partition": r["partition"],
                "offset": r["offset"],
                "timestamp": r["timestamp"],
                "timestampType": "CREATE_TIME",
                "key": base64.b64encode(r["key"] or b"").decode(),
                "value": base64.b64encode(r["value"] or b"").decode(),
                "headers": [],
            }
        )
    return {"eventSource": "SelfManagedKafka", "bootstrapServers": bootstrap, "records": grouped}
