"""Lambda function: S3 object-created notifications (direct, SQS or Kafka event source)."""

from __future__ import annotations

from typing import Any

from functions.events.bucket_event import get_bucket_event_function


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Classify and store the uploaded products; see :mod:`functions.events.bucket_event`."""
    return get_bucket_event_function()(event)
