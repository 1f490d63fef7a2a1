"""Where the model server decodes and resizes images (``FS_MODEL_DECODE_POOL``).

``threads``: a pool of low-priority threads in the server's process, one per core (PIL and
numpy release the GIL for most of the work); on a CPU the model needs the cores, and decoding
only fills the gaps. ``processes``: one worker process per core, free of the GIL, for a GPU
that embeds thousands of images a second and must be fed; each image's pixels come back
pickled (600 KB at 224x224). ``auto`` (default): processes when the model runs on a GPU.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Literal

from fashion_search.background import background_pool, lower_thread_priority

DecodePool = Literal["auto", "threads", "processes"]


def decode_pool(mode: DecodePool, on_gpu: bool) -> Executor:
    """The pool for ``mode``, given whether the model runs on a GPU."""
    workers = os.cpu_count() or 1
    if mode == "processes" or (mode == "auto" and on_gpu):
        # forkserver: the workers do not inherit the gRPC server's threads and locks.
        context = multiprocessing.get_context("forkserver")
        return ProcessPoolExecutor(workers, context, initializer=lower_thread_priority)
    return background_pool(workers, "preprocess")
