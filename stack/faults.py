"""Faults injected into the running local stack, for the fault tests and ``bench/soak.py``:
a service stopped for a while, then started again as ``python -m stack up`` would."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
