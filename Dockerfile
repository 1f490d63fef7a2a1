# One image per deployable role, each with only its role's extra (pyproject.toml):
#   api      the search functions (REST + GraphQL)          python -m functions
#   ingest   the upload dispatcher (bucket events)          python -m functions.events kafka
#   serve    the model server on ONNX Runtime (CPU)         python -m model_server
#   train    training, catalog jobs, MLflow, Airflow, setup  fashion-search ...
#   ui       the Streamlit UI                                streamlit run ui/app.py
#   serve-gpu  the model server on CUDA (the serve-gpu extra: CUDA 13 and cuDNN 9 from the
#            base image); run it with `--gpus all`.
# `docker build --target api -t fashion-search-api .`; docker-compose.yml builds them all.
# Works with the classic builder too (no BuildKit features): `python -m stack.images build`.

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# Python, uv and the lock file: what every role starts from (the dependencies' layers change with
# the lock file only; README.md, the project's metadata, comes with the source).
FROM python:3.11-slim-bookworm AS python-base
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1 UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    FS_PROJECT_PYTHON=/opt/venv/bin/python
WORKDIR /app
COPY pyproject.toml uv.lock ./

# The source tree with its generated gRPC stubs (grpcio-tools stays out of the role images).
FROM python-base AS source
RUN uv sync --frozen --no-dev --only-group proto --no-install-project
COPY README.md ./
COPY proto ./proto
COPY scripts ./scripts
COPY fashion_search ./fashion_search
COPY stack ./stack
COPY model_server ./model_server
COPY functions ./functions
COPY ui ./ui
COPY dags ./dags
COPY localstack ./localstack
COPY template.yaml docker-compose.yml ./
RUN PYTHON=python scripts/gen_proto.sh && rm -rf /opt/venv

FROM python-base AS api
RUN uv sync --frozen --no-dev --extra api --no-install-project
COPY --from=source /app /app
RUN uv sync --frozen --no-dev --extra api
ENTRYPOINT ["python", "-m", "stack.secrets", "exec", "--"]
CMD ["python", "-m", "functions"]

FROM python-base AS ingest
RUN uv sync --frozen --no-dev --extra ingest --no-install-project
COPY --from=source /app /app
RUN uv sync --frozen --no-dev --extra ingest
ENTRYPOINT ["python", "-m", "stack.secrets", "exec", "--"]
CMD ["python", "-m", "functions.events", "kafka"]

FROM python-base AS serve
RUN uv sync --frozen --no-dev --extra serve --no-install-project
COPY --from=source /app /app
RUN uv sync --frozen --no-dev --extra serve
ENTRYPOINT ["python", "-m", "stack.secrets", "exec", "--"]
CMD ["python", "-m", "model_server"]

FROM python-base AS ui
RUN uv sync --frozen --no-dev --extra ui --no-install-project
COPY --from=source /app /app
RUN uv sync --frozen --no-dev --extra ui
ENTRYPOINT ["python", "-m", "stack.secrets", "exec", "--"]
CMD ["streamlit", "run", "ui/app.py", "--server.headless", "true"]

# Airflow in its own locked environment (/opt/airflow-venv); its tasks, the CLI, MLflow's
# server and the compose setup run in the project's (/opt/venv).
FROM python-base AS train
COPY stack/assets/airflow-requirements.txt /tmp/airflow-requirements.txt
RUN uv venv --python 3.11 /opt/airflow-venv \
    && uv pip install --python /opt/airflow-venv/bin/python -r /tmp/airflow-requirements.txt
RUN uv sync --frozen --no-dev --extra train --extra setup --no-install-project
COPY --from=source /app /app
RUN uv sync --frozen --no-dev --extra train --extra setup
ENTRYPOINT ["python", "-m", "stack.secrets", "exec", "--"]
CMD ["fashion-search", "--help"]

FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS serve-gpu
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1 UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_INSTALL_DIR=/opt/python PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv python install 3.11 \
    && uv sync --frozen --no-dev --extra serve-gpu --no-install-project
COPY --from=source /app /app
RUN uv sync --frozen --no-dev --extra serve-gpu
ENTRYPOINT ["python", "-m", "stack.secrets", "exec", "--"]
CMD ["python", "-m", "model_server"]
