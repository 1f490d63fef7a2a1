"""S3 bucket notifications (AWS, LocalStack and MinIO shapes) to typed object-created and
object-removed events."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fashion_search.errors import FashionSearchError, InvalidObjectKeyError
from fashion_search.storage import validate_object_key


class MalformedEventError(FashionSearchError):
    """A message is not an S3 bucket notification this system can act on."""


@dataclass(frozen=True)
class ObjectCreated:
    """A new object (or a new version of one) in a bucket; ``etag`` is empty when the event
    did not carry one (then the version read is the one processed)."""

    bucket: str
    key: str
    etag: str
    size: int
    event_name: str

    @property
    def s3_path(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class ObjectRemoved:
    """An object deleted from a bucket."""

    bucket: str
    key: str
    event_name: str

    @property
    def s3_path(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"


ObjectEvent = ObjectCreated | ObjectRemoved


def parse_notification(payload: str | bytes | Mapping[str, Any]) -> list[ObjectEvent]:
    """The object-created and object-removed records of one notification; other records (the
    ``s3:TestEvent`` sent when a notification is configured, other event kinds) give none.

    Keys arrive URL-encoded (``a+b%2Fc.jpg``) and are decoded. MalformedEventError names
    what is missing or wrong.
    """
    document = _as_mapping(payload)
    if document.get("Event") == "s3:TestEvent":
        return []
    records = document.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedEventError("the event has no 'Records' list")
    return [event for record in records if (event := _object_event(record)) is not None]


def _as_mapping(payload: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(payload, Mapping):
        return payload
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedEventError(f"the event is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise MalformedEventError(f"the event is a JSON {type(document).__name__}, not an object")
    return document


def _object_event(record: object) -> ObjectEvent | None:
    if not isinstance(record, dict):
        raise MalformedEventError("a record is not a JSON object")
    name = record.get("eventName")
    if not isinstance(name, str) or not name:
        raise MalformedEventError("a record has no 'eventName'")
    kind = name.removeprefix("s3:").split(":", 1)[0]
    if kind not in ("ObjectCreated", "ObjectRemoved"):
        return None
    try:
        bucket = record["s3"]["bucket"]["name"]
        obj = record["s3"]["object"]
        key = urllib.parse.unquote_plus(obj["key"])
        etag = str(obj.get("eTag") or obj.get("etag") or "").strip('"')
        size = int(obj.get("size", 0))
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedEventError(
            f"a record lacks s3.bucket.name or s3.object.key: {error}"
        ) from error
    if not isinstance(bucket, str) or not bucket:
        raise MalformedEventError("a record's bucket name is empty")
    try:
        validate_object_key(key)
    except InvalidObjectKeyError as error:
        raise MalformedEventError(str(error)) from error
    if kind == "ObjectRemoved":
        return ObjectRemoved(bucket, key, name)
    return ObjectCreated(bucket, key, etag, size, name)
