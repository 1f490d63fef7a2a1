"""Where the DAGs find the project: its Python (a virtual environment with fashion_search and
its dependencies, apart from Airflow's own). Every task runs there via ``@task.external_python``,
so Airflow's pinned dependencies and the project's never have to agree."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

PROJECT_PYTHON = os.environ.get(
    "FS_PROJECT_PYTHON", str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python")
)

#: Retries of a failed task (``FS_DAG_TASK_RETRIES``); every step is safe to run again.
DEFAULT_ARGS = {
    "retries": int(os.environ.get("FS_DAG_TASK_RETRIES", "2")),
    "retry_delay": timedelta(seconds=30),
}
