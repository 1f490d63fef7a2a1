# One image for every fashion-search service, with every role's extra: stack setup, catalog
# loader, MLflow server, model training, model server, API, UI, upload dispatcher, and Airflow
# (its own locked environment in /opt/airflow-venv; DAG tasks run in the project's /opt/venv).
FROM python:3.11-slim-bookworm

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 FS_PROJECT_PYTHON=/opt/venv/bin/python

WORKDIR /app
COPY stack/assets/airflow-requirements.txt /tmp/airflow-requirements.txt
RUN uv venv --python 3.11 /opt/airflow-venv \
    && uv pip install --python /opt/airflow-venv/bin/python -r /tmp/airflow-requirements.txt
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --all-extras --group proto --no-install-project
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
RUN uv sync --frozen --no-dev --all-extras --group proto && PYTHON=python scripts/gen_proto.sh

CMD ["fashion-search", "--help"]
