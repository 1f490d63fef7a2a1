"""One ONNX Runtime session per exported tower, on the best execution provider really usable."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)


def preferred_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, CPU always."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def thread_count(threads: int) -> int:
    """An intra-op thread setting resolved: ``threads``, or one per core for 0."""
    return threads or (os.cpu_count() or 1)


class OnnxSession:
    """An inference session with one input and one output."""

    def __init__(self, path: Path, threads: int = 0, force_spinning_stop: bool = True) -> None:
        """``threads``: intra-op threads, 0 = one per core. ``force_spinning_stop``: the pool's
        threads spin while a run lasts, which keeps its parallel sections fast, and sleep when
        it ends instead of spinning on for ~40 ms on the cores that the API and the database
        need next (text search at 32 concurrent +18%, images/s at batch 32 +6%: decision 0011).
        """
        options = ort.SessionOptions()
        options.intra_op_num_threads = thread_count(threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if force_spinning_stop:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(str(path), options, providers=preferred_providers())
        self.input_name = self.session.get_inputs()[0].name
        # What really runs: the GPU build silently falls back to CPU without CUDA.
        self.providers: list[str] = list(self.session.get_providers())
        log.info("%s on %s", path.name, self.providers)

    def run(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Run the session on one batch."""
        output: np.ndarray[Any, np.dtype[np.float32]] = self.session.run(
            None, {self.input_name: batch}
        )[0]
        return output
