"""Faults injected into the running local stack, for the fault tests and ``bench/soak.py``:
a service stopped for a while, then started again as ``python -m stack up`` would; and what
the catalog then holds of the uploads."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from fashion_search.settings import Settings
from stack.orchestrator import down, up

log = logging.getLogger("stack")


@contextmanager
def stopped(settings: Settings, role: str) -> Iterator[None]:
    """``role`` (``postgres``, ``kafka``, ``s3``) is down inside the block and up again (ready)
    after it."""
    started = time.monotonic()
    down(settings, (role,))
    log.info("fault: %s stopped", role)
    try:
        yield
    finally:
        up(settings, (role,))
        log.info("fault: %s up again after %.1f s", role, time.monotonic() - started)


def outage(settings: Settings, role: str, seconds: float) -> None:
    """Stop ``role`` for ``seconds``, then start it again."""
    with stopped(settings, role):
        time.sleep(seconds)


def uploaded_versions(settings: Settings, prefix: str) -> dict[str, list[str]]:
    """Key -> the ETags of its products, for the uploads under ``prefix`` (a connection of its
    own: a pool may still hold connections a PostgreSQL restart broke)."""
    with psycopg.connect(settings.database.url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT source_key, source_etag FROM products"
            " WHERE source_bucket = %s AND source_key LIKE %s",
            (settings.storage.uploads_bucket, prefix + "%"),
        ).fetchall()
    found: dict[str, list[str]] = {}
    for key, etag in rows:
        found.setdefault(key, []).append(etag)
    return found
