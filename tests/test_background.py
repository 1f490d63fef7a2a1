"""Background pools: their threads run nicer than the rest of the process."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from fashion_search.background import NICE_INCREMENT, background_pool


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are Linux-only")
def test_background_threads_are_nicer_and_the_caller_is_not() -> None:
    before = _nice()
    with background_pool(2, "test") as pool:
        inside = pool.submit(_nice).result()
    assert inside == min(19, before + NICE_INCREMENT)
    assert _nice() == before
