#!/usr/bin/env bash
# Installs what fashion-search needs on this machine, idempotently: uv (pinned), the locked
# Python environment (.venv), and - as root with apt - Java 17 and Maven for the Kafka broker.
# Go (for MinIO and the compose CLI) comes from the machine; without it the stack falls back.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
export PATH="$HOME/.local/bin:$PATH"

if ! command -v uv >/dev/null || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION"
  python3 -m pip install --quiet --user --disable-pip-version-check "uv==$UV_VERSION"
fi

if { ! command -v java >/dev/null || ! command -v mvn >/dev/null; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "bootstrap: installing Java 17 and Maven (Kafka broker jars)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    openjdk-17-jre-headless maven >/dev/null || echo "bootstrap: apt failed; Kafka falls back to Tansu"
fi

uv sync --frozen --compile-bytecode --quiet
scripts/gen_proto.sh
