"""One ONNX Runtime session per exported tower, on the best execution provider really usable."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)


CUDA = "CUDAExecutionProvider"


def preferred_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, CPU always."""
    available = ort.get_available_providers()
    return [p for p in (CUDA, "CPUExecutionProvider") if p in available]


def preferred_variant(quantized: bool) -> str:
    """The towers to serve: int8 when asked (CPU), fp16 where this build offers CUDA (the
    ``serve-gpu`` extra's onnxruntime-gpu), else fp32."""
    if quantized:
        return "int8"
    return "fp16" if CUDA in preferred_providers() else "fp32"


def batch_limits(max_batch: int, max_wait_ms: float, on_gpu: bool) -> tuple[int, float]:
    """The batcher's largest batch and wait (seconds) for a part-full one: as set, or where
    left automatic (0 and -1) 32 and no wait on a CPU, 256 and 2 ms on a GPU (which computes a
    batch of 256 in about the time of one)."""
    size = max_batch or (256 if on_gpu else 32)
    wait_ms = max_wait_ms if max_wait_ms >= 0 else (2.0 if on_gpu else 0.0)
    return size, wait_ms / 1000


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
        self.output_name = self.session.get_outputs()[0].name
        # What really runs: the GPU build silently falls back to CPU without CUDA.
        self.providers: list[str] = list(self.session.get_providers())
        self.on_gpu = CUDA in self.providers
        log.info("%s on %s", path.name, self.providers)

    def run(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Run the session on one batch; on a GPU with I/O binding (the input copied to the
        device once, the output allocated there and copied back once)."""
        if not self.on_gpu:
            output: np.ndarray[Any, np.dtype[np.float32]] = self.session.run(
                None, {self.input_name: batch}
            )[0]
            return output
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
        binding.bind_output(self.output_name, "cuda")
        self.session.run_with_iobinding(binding)
        result: np.ndarray[Any, np.dtype[np.float32]] = binding.copy_outputs_to_cpu()[0]
        return result
