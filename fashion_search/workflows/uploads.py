"""``reconcile_uploads``: the uploads bucket against the catalog (a command and a scheduled
Airflow task; see :mod:`fashion_search.ingest.reconcile`)."""

from __future__ import annotations

from typing import Any

from fashion_search.ingest.dead_letters import read_dead_letters
from fashion_search.ingest.reconcile import differences, reconcile
from fashion_search.settings import Settings


def reconcile_uploads(settings: Settings, min_age_s: float | None = None) -> dict[str, Any]:
    """Process what the uploads bucket holds and the catalog lacks, remove what the bucket no
    longer holds; what was found and the function's outcomes."""
    from functions.events.bucket_event import build_bucket_event_function

    function = build_bucket_event_function(settings)
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
    return {
        "bucket": found.bucket,
        "missing": len(found.missing),
        "deleted": len(found.deleted),
        "outcomes": dict(outcomes),
    }
