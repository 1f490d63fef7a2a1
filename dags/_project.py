"""Where the DAGs find the project: its Python (a virtual environment with fashion_search and
its dependencies, apart from Airflow's own). Every task runs there via ``@task.external_python``,
so Airflow's pinned dependencies and the project's never have to agree."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset

PROJECT_PYTHON = os.environ.get(
    "FS_PROJECT_PYTHON", str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python")
)

#: What every DAG of the project shares: triggered runs only, retried tasks (every step is safe
#: to run again; ``FS_DAG_TASK_RETRIES``), run-conf templates rendered as Python values.
DAG_DEFAULTS: dict[str, Any] = {
    "schedule": None,
    "catchup": False,
    "default_args": {
        "retries": int(os.environ.get("FS_DAG_TASK_RETRIES", "2")),
        "retry_delay": timedelta(seconds=30),
    },
    "render_template_as_native_obj": True,
}

#: The catalog's products, updated by what adds to them (recreate_prod_database's load,
#: reconcile_uploads every 15 minutes for the uploads since); retrain_on_new_data runs on it.
CATALOG_ASSET = Asset("fashion_search_catalog")

#: The catalog's shards: the mapped tasks of a bulk embedding (recreate_prod_database) and of a
#: rollout's build, each ``{"index": i, "count": n}`` (fashion_search.catalog.shards.Shard), as
#: many as ``FS_DATABASE__SHARDS`` (or its former name; its default, 2, is the settings' own:
#: tests/test_dags.py).
CATALOG_SHARDS = [
    {"index": i, "count": n}
    for n in [
        int(os.environ.get("FS_DATABASE__SHARDS") or os.environ.get("FS_CATALOG_SHARDS", "2"))
    ]
    for i in range(n)
]
