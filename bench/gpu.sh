#!/usr/bin/env bash
# The GPU rows, on a lent GPU machine (the device tool), in at most 8 minutes. Here first:
#   .venv/bin/python -m bench.gpu prepare     # .device/: the catalog's JPEGs, cp312 wheels
# then, with the device tool: command `bash bench/gpu.sh`, carry [".device", "fashion_search/rpc"].
# It installs the carried wheels the machine's Python lacks (no registry there), runs
# `python -m bench.gpu run` (PyTorch CUDA; see its docstring) and leaves gpu.json in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
deps=/tmp/fashion-gpu-deps
for module in PIL grpc google.protobuf; do
  if ! PYTHONPATH=$deps $PY -c "import $module" 2>/dev/null; then
    $PY -m pip install --quiet --no-index --no-deps --target "$deps" .device/wheels/*.whl
    break
  fi
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
PYTHONPATH="$deps:$PWD" PYTHONUNBUFFERED=1 timeout 470 $PY -m bench.gpu run --out "${OUT:-bench/results}"
