# One image for every fashion-search service (stack setup, catalog loader, MLflow server, model
# training and the model server; API, dispatcher, UI and Airflow join as they land).
FROM python:3.11-slim-bookworm

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY proto ./proto
COPY scripts ./scripts
COPY fashion_search ./fashion_search
COPY stack ./stack
COPY model_server ./model_server
COPY localstack ./localstack
RUN uv sync --frozen --no-dev && PYTHON=python scripts/gen_proto.sh

CMD ["fashion-search", "--help"]
