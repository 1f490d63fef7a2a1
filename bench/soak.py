"""Soak of the upload path under faults, against the running native stack (``make up``: model
server, serving catalog, dispatcher):

    .venv/bin/python -m bench.soak --uploads 2000 --every 20 --down 8 --pace 0.1

Uploads held-out product photos to the uploads bucket under a fresh prefix while a second
thread stops one dependency at random (PostgreSQL, Kafka or MinIO) every ``--every`` seconds
for ``--down`` seconds, then starts it again. When the uploads are done it stops the faults,
waits for the catalog to drain, and runs the reconciliation. It reports the uploads, the faults
injected, what was lost (missing from the catalog, or there in an older version) before and
after reconciliation, duplicated (more than one row for a key), dead-lettered, and the time to
drain. Baseline in the same run: the same number of uploads without faults (``--baseline``
uploads, 200 by default), so the drain time shows as a ratio. The products it made are deleted
afterwards, unless ``--keep``.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import psycopg

from bench.report import Report, Table, add_markdown_option
from fashion_search.dataset import DatasetItem, iter_dataset
from fashion_search.ingest.dead_letters import read_dead_letters
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import ObjectStore
from fashion_search.workflows.uploads import reconcile_uploads
from functions.events.bucket_event import build_bucket_event_function
from stack.faults import outage, uploaded_versions

ROLES = ("postgres", "kafka", "s3")


@dataclass
class Run:
    """One soak (or its baseline): what was uploaded and what happened."""

    prefix: str
    etags: dict[str, str] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    refused_puts: int = 0
    upload_s: float = 0.0
    drain_s: float = 0.0
    lost_before: int = 0
    reconciled: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0
    dead_lettered: int = 0


def _upload(
    store: ObjectStore, bucket: str, items: list[DatasetItem], run: Run, pace_s: float
) -> None:
    for n, item in enumerate(items):
        time.sleep(pace_s)
        key = f"{run.prefix}{n:05d}-{item.fields.id}.jpg"
        while True:
            try:
                run.etags[key] = store.put(bucket, key, item.image)
                break
            except Exception:  # the store is down: a real client tries again
                run.refused_puts += 1
                time.sleep(0.5)


def _inject(settings: Settings, every_s: float, down_s: float, stop: threading.Event,
            run: Run, seed: int) -> None:  # fmt: skip
    rng = random.Random(seed)
    while not stop.wait(max(every_s - down_s, 0.0)):
        role = rng.choice(ROLES)
        run.faults.append(role)
        outage(settings, role, down_s)


def _catalog(settings: Settings, prefix: str) -> dict[str, list[str]]:
    try:
        return uploaded_versions(settings, prefix)
    except psycopg.OperationalError:  # a fault is under way: nothing to see for now
        return {}


def _missing(run: Run, found: dict[str, list[str]]) -> int:
    return sum(run.etags[key] not in found.get(key, []) for key in run.etags)


def soak(settings: Settings, items: list[DatasetItem], every_s: float, down_s: float,
         pace_s: float, drain_timeout_s: float, seed: int) -> Run:  # fmt: skip
    """Upload ``items`` (faults every ``every_s`` when it is above 0), drain, reconcile."""
    run = Run(prefix=f"soak/{uuid.uuid4().hex[:8]}/")
    store = ObjectStore(settings)
    stop = threading.Event()
    injector = threading.Thread(
        target=_inject, args=(settings, every_s, down_s, stop, run, seed), daemon=True
    )
    started = time.monotonic()
    if every_s > 0:
        injector.start()
    _upload(store, settings.storage.uploads_bucket, items, run, pace_s)
    run.upload_s = time.monotonic() - started
    stop.set()
    if injector.is_alive():
        injector.join()  # the fault under way ends (its dependency is started again)
    uploaded = time.monotonic()
    deadline = uploaded + drain_timeout_s
    while _missing(run, _catalog(settings, run.prefix)) and time.monotonic() < deadline:
        time.sleep(1.0)
    run.drain_s = time.monotonic() - uploaded
    run.lost_before = _missing(run, _catalog(settings, run.prefix))
    function = build_bucket_event_function(settings)
    run.reconciled = reconcile_uploads(settings, function, min_age_s=0.0).outcomes
    found = _catalog(settings, run.prefix)
    run.lost = _missing(run, found)
    run.duplicated = sum(len(etags) - 1 for etags in found.values())
    run.dead_lettered = sum(
        (letter.record.get("key") or "").startswith(run.prefix)
        for letter in read_dead_letters(settings)
    )
    return run


def _delete(settings: Settings, run: Run) -> None:
    store = ObjectStore(settings)
    for key in run.etags:
        store.client.delete_object(Bucket=settings.storage.uploads_bucket, Key=key)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=2000)
    parser.add_argument("--baseline", type=int, default=200, help="uploads without faults")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between faults")
    parser.add_argument("--down", type=float, default=8.0, help="seconds a dependency is down")
    parser.add_argument("--pace", type=float, default=0.1, help="seconds between uploads")
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--keep", action="store_true", help="keep the uploads and products")
    add_markdown_option(parser)
    args = parser.parse_args()

    settings = get_settings()
    items = list(iter_dataset(settings.dataset_source, offset=40_000, limit=args.uploads))
    report = Report("bench.soak")
    runs = {
        "baseline (no faults)": soak(settings, items[: args.baseline], 0, 0, args.pace,
                                     args.drain_timeout, args.seed),
        "soak": soak(settings, items, args.every, args.down, args.pace, args.drain_timeout,
                     args.seed),
    }  # fmt: skip
    table = Table(
        f"Uploads under faults (one of {', '.join(ROLES)} down {args.down:.0f} s every"
        f" {args.every:.0f} s)",
        ["run", "uploads", "faults", "refused PUTs", "upload s", "drain s", "drain s / upload",
         "lost before reconcile", "reconciled", "lost", "duplicated", "dead-lettered"],
    )  # fmt: skip
    base = runs["baseline (no faults)"]
    base_rate = base.drain_s / max(len(base.etags), 1)
    for name, run in runs.items():
        rate = run.drain_s / max(len(run.etags), 1)
        faults = ", ".join(f"{role} {run.faults.count(role)}" for role in ROLES) or "none"
        reconciled = ", ".join(f"{k} {v}" for k, v in sorted(run.reconciled.items())) or "none"
        table.rows.append([
            name, len(run.etags), faults, run.refused_puts, run.upload_s, run.drain_s,
            f"{rate * 1000:.1f} ms ({rate / base_rate if base_rate else 0:.2f}x)",
            run.lost_before, reconciled, run.lost, run.duplicated, run.dead_lettered,
        ])  # fmt: skip
    report.add(table)
    report.write_markdown(args.markdown)
    if not args.keep:
        for run in runs.values():
            _delete(settings, run)
    if any(run.lost or run.duplicated or run.dead_lettered for run in runs.values()):
        raise SystemExit("uploads were lost, duplicated or dead-lettered")


if __name__ == "__main__":
    main()
