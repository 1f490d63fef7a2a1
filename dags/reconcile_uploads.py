"""reconcile_uploads: every FS_RECONCILE_INTERVAL_S (15 minutes by default), compare the
uploads bucket with the catalog: process the objects whose events were lost, remove the
products of objects deleted without a removal event (``python -m functions.events reconcile``
by hand).
Each run updates the catalog asset, so ``retrain_on_new_data`` checks the uploads since.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from _project import CATALOG_ASSET, DAG_DEFAULTS, PROJECT_PYTHON
from airflow.sdk import dag, task


@dag(
    dag_id="reconcile_uploads",
    tags=["fashion-search", "uploads"],
    **{
        **DAG_DEFAULTS,
        "schedule": timedelta(seconds=float(os.environ.get("FS_RECONCILE_INTERVAL_S", "900"))),
        "max_active_runs": 1,
    },
)
def reconcile_uploads() -> None:
    """One task: reconcile."""

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False, outlets=[CATALOG_ASSET])
    def reconcile() -> dict[str, Any]:
        from dataclasses import asdict

        from fashion_search.settings import get_settings
        from fashion_search.workflows.uploads import reconcile_uploads
        from functions.events.bucket_event import build_bucket_event_function

        settings = get_settings()
        return asdict(reconcile_uploads(settings, build_bucket_event_function(settings)))

    reconcile()


dag = reconcile_uploads()
