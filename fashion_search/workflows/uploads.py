"""``reconcile_uploads``: the uploads bucket against the catalog (a command and a scheduled
Airflow task; see :mod:`fashion_search.ingest.reconcile`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fashion_search.ingest.dead_letters import read_dead_letters
from fashion_search.ingest.processor import UploadProcessor
from fashion_search.ingest.reconcile import differences, reconcile
from fashion_search.settings import Settings


class BucketEventFunction(Protocol):
    """The bucket-event function (``functions.events.bucket_event``): invoked with S3
    notifications, it returns the outcomes counted; its processor holds the catalog and store."""

    @property
    def processor(self) -> UploadProcessor:
        """The upload processor the function runs."""
        ...

    def __call__(self, event: Mapping[str, Any]) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Reconciliation:
    """What the bucket and the catalog disagreed on, and the function's outcomes."""

    bucket: str
    missing: int
    deleted: int
    outcomes: dict[str, int]


def reconcile_uploads(
    settings: Settings, function: BucketEventFunction, min_age_s: float | None = None
) -> Reconciliation:
    """Process through ``function`` what the uploads bucket holds and the catalog lacks, remove
    what the bucket no longer holds."""
    given_up = {
        (r["key"], r.get("eTag") or "")
        for letter in read_dead_letters(settings)
        if (r := letter.record).get("bucket") == settings.storage.uploads_bucket and r.get("key")
    }
    found = differences(
        function.processor.catalog,
        function.processor.store,
        settings.storage.uploads_bucket,
        settings.ingest.reconcile_min_age_s if min_age_s is None else min_age_s,
        given_up,
    )
    outcomes = reconcile(function, found, settings.ingest.batch_size)
    return Reconciliation(found.bucket, len(found.missing), len(found.deleted), dict(outcomes))
