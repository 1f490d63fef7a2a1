"""Thread pools for work that yields the CPU to the model runs.

ONNX Runtime splits each operator evenly over its threads, so on a machine with few cores any
other runnable thread of the same priority holds up one of them, and the whole operator waits
for it: on 2 cores, a thread busy 15% of the time cost the ViT-B/32 image tower 5-12% of its
throughput, one busy all the time half. At nice 19 such a thread runs in the gaps and, with
ONNX Runtime's default spinning threads, cost nothing measurable. Image preprocessing and the
catalog embedding's reads and writes run in these pools.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

#: How much nicer than the process a background thread is (19: the lowest priority).
NICE_INCREMENT = 19


def lower_thread_priority(increment: int = NICE_INCREMENT) -> None:
    """Make the calling thread (only) nicer by ``increment``; a no-op outside Linux."""
    if sys.platform != "linux":  # elsewhere PRIO_PROCESS with a thread id means a process
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):  # not permitted: the thread keeps its priority
        nice = min(19, os.getpriority(os.PRIO_PROCESS, thread) + increment)
        os.setpriority(os.PRIO_PROCESS, thread, nice)


def background_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose threads run at a lower priority."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=lower_thread_priority)
