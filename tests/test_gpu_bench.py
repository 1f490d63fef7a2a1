"""bench/gpu.sh's measuring script runs (here on the CPU, quick): what a lent GPU machine runs
is kept working without one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu import write_images
from fashion_search.settings import REPO_ROOT, Settings


def test_the_gpu_bench_measures_every_row_on_whatever_device_there_is(tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available() and not torch.ops.mkldnn._is_mkldnn_fp16_supported():
        pytest.skip("no CUDA, and this CPU computes fp16 slowly (no AVX-512 FP16): the fp16"
                    " rows would take hours")  # fmt: skip
    assert write_images(Settings().dataset_source, tmp_path / "data", limit=300) == 300
    subprocess.run(
        [sys.executable, "-m", "bench.gpu", "run", "--quick", "--data", str(tmp_path / "data"),
         "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, check=True, timeout=300,
    )  # fmt: skip
    report = json.loads((tmp_path / "out" / "gpu.json").read_text())
    rows = {(r["what"], r["dtype"], r["batch"]): r["value"] for r in report["rows"]}
    for dtype in ("fp16", "fp32"):
        for batch in (1, 32, 256):
            assert rows["images/s, model only", dtype, batch] > 0
        assert rows["texts/s, model only", dtype, 256] > 0
        assert rows["query latency p50 ms (one text)", dtype, 1] > 0
    for tower in ("image", "text"):
        assert rows[f"fp16 parity: min cosine to fp32, {tower}", "fp16", 64] > 0.99
    for pool in ("threads", "processes"):
        assert rows[f"images/s end to end, JPEG via gRPC, decode on {pool}", "fp16", 256] > 0
        assert rows[f"300 catalog images embedded (s), decode on {pool}", "fp16", 256] > 0
    assert "not ONNX Runtime" in report["reference"]
