# Two images. The last stage (the default, what docker-compose.yml builds): every
# fashion-search service, with every role's extra: stack setup, catalog loader, MLflow server,
# model training, model server (CPU), API, UI, upload dispatcher, and Airflow (its own locked
# environment in /opt/airflow-venv; DAG tasks run in the project's /opt/venv).
# `docker build --target serve-gpu -t fashion-search:gpu .`: the model server alone on CUDA
# (the serve-gpu extra's onnxruntime-gpu: CUDA 13 and cuDNN 9, from the base image); run it
# with `--gpus all`. It serves the fp16 towers once ONNX Runtime really runs on the GPU.

FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS serve-gpu
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_INSTALL_DIR=/opt/python PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv python install 3.11 \
    && uv sync --frozen --no-dev --extra serve-gpu --group proto --no-install-project
COPY proto ./proto
COPY scripts ./scripts
COPY fashion_search ./fashion_search
COPY stack ./stack
COPY model_server ./model_server
COPY functions ./functions
COPY ui ./ui
RUN uv sync --frozen --no-dev --extra serve-gpu --group proto && PYTHON=python scripts/gen_proto.sh
CMD ["python", "-m", "model_server"]

FROM python:3.11-slim-bookworm

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 FS_PROJECT_PYTHON=/opt/venv/bin/python

WORKDIR /app
COPY stack/assets/airflow-requirements.txt /tmp/airflow-requirements.txt
RUN uv venv --python 3.11 /opt/airflow-venv \
    && uv pip install --python /opt/airflow-venv/bin/python -r /tmp/airflow-requirements.txt
COPY pyproject.toml uv.lock README.md ./
# Every role's extra but serve-gpu (the CPU and GPU builds of ONNX Runtime exclude each other).
ENV EXTRAS="--extra api --extra ingest --extra train --extra ui"
RUN uv sync --frozen --no-dev $EXTRAS --group proto --no-install-project
COPY proto ./proto
COPY scripts ./scripts
COPY fashion_search ./fashion_search
COPY stack ./stack
COPY model_server ./model_server
COPY functions ./functions
COPY ui ./ui
COPY dags ./dags
COPY template.yaml ./
COPY localstack ./localstack
RUN uv sync --frozen --no-dev $EXTRAS --group proto && PYTHON=python scripts/gen_proto.sh

CMD ["fashion-search", "--help"]
