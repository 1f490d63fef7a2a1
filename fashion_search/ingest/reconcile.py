"""Reconciliation of the uploads bucket with the catalog: the safety net under the events.

What the bucket holds and the catalog lacks, or holds in another version (an event lost: say,
raised while no notification could be sent), is processed; what the catalog holds and the
bucket no longer does (a removal event lost) is removed. Both go through the bucket-event
function as S3 notifications, so the outcome is the one the lost events would have had.
Objects changed in the last ``min_age_s`` are left to their own events, still on their way, and
an object version that was dead-lettered (it can never succeed) is not tried again.
"""

from __future__ import annotations

import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fashion_search.catalog.repositories import Catalog
from fashion_search.storage import ObjectStore

Function = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class Differences:
    """Where the bucket and the catalog disagree: keys (with the bucket's ETag) to process,
    and keys to remove."""

    bucket: str
    missing: dict[str, str]
    deleted: list[str]


def differences(
    catalog: Catalog,
    store: ObjectStore,
    bucket: str,
    min_age_s: float,
    given_up: Set[tuple[str, str]] = frozenset(),
) -> Differences:
    """Compare ``bucket`` with its products; ``given_up`` holds the (key, ETag) pairs that were
    dead-lettered."""
    listed = store.list_etags(bucket)
    stored = catalog.uploads.uploaded_etags(bucket)
    settled = datetime.now(UTC) - timedelta(seconds=min_age_s)
    missing = {
        key: etag
        for key, (etag, modified) in listed.items()
        if stored.get(key) != etag and modified <= settled and (key, etag) not in given_up
    }
    return Differences(bucket, missing, sorted(set(stored) - set(listed)))


def notification(bucket: str, records: list[tuple[str, str, str]]) -> dict[str, Any]:
    """An S3 notification of (event name, key, ETag) records, as S3 invokes a function."""
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": name,
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": urllib.parse.quote_plus(key, safe="/"), "eTag": etag},
                },
            }
            for name, key, etag in records
        ]
    }


def reconcile(function: Function, found: Differences, batch_size: int) -> Counter[str]:
    """Invoke the function with the missing objects and the deleted keys, ``batch_size`` a
    call; the outcomes counted (``created``, ``updated``, ``removed``, ``dead-letter``...)."""
    records = [("ObjectCreated:Put", key, etag) for key, etag in sorted(found.missing.items())]
    records += [("ObjectRemoved:Delete", key, "") for key in found.deleted]
    counts: Counter[str] = Counter()
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        counts.update({k: int(v) for k, v in function(notification(found.bucket, chunk)).items()})
    return counts
