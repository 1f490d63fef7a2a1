#!/usr/bin/env bash
# Installs what fashion-search needs on this machine, idempotently: uv (pinned), the locked
# Python environment (.venv), the AWS SAM CLI (its own environment, for `sam validate`), and -
# as root with apt - Java 17 and Maven for the Kafka broker and Chromium for the UI test.
# Go (for MinIO and the compose CLI) comes from the machine; without it the stack falls back.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
SAM_VERSION=1.170.0
CACHE="${FS_CACHE_DIR:-$HOME/.cache/fashion-search}"
export PATH="$HOME/.local/bin:$PATH"

if ! command -v uv >/dev/null || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION"
  python3 -m pip install --quiet --user --disable-pip-version-check "uv==$UV_VERSION"
fi

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null \
    || echo "bootstrap: apt failed; Kafka falls back to Tansu, the browser test cannot run"
fi

if [ ! -x "$CACHE/bin/sam" ]; then
  echo "bootstrap: installing AWS SAM CLI $SAM_VERSION"
  UV_TOOL_DIR="$CACHE/uv-tools" UV_TOOL_BIN_DIR="$CACHE/bin" \
    uv tool install --quiet "aws-sam-cli==$SAM_VERSION"
fi

uv sync --frozen --compile-bytecode --quiet
scripts/gen_proto.sh
