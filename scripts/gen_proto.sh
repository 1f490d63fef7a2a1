#!/usr/bin/env bash
# Generate the Python gRPC stubs of proto/embedding.proto into fashion_search/rpc/.
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-.venv/bin/python}" -m grpc_tools.protoc -Ifashion_search/rpc=proto \
  --python_out=. --grpc_python_out=. --pyi_out=. proto/embedding.proto
