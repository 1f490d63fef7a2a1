"""decide_experiment: every FS_EXPERIMENTS__DECIDE_INTERVAL_S (15 minutes by default), read the
experiment ``finetune`` started for a candidate (``FS_EXPERIMENTS__ROLLOUT_SHARE`` > 0) and act
on its sequential test: the candidate serves (the zero-downtime switch) if it won, is retired
if it lost, and the experiment stops with the decision logged to the candidate's MLflow run;
nothing while the test says keep running, or when no such experiment runs.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from _project import DAG_DEFAULTS, PROJECT_PYTHON
from airflow.sdk import dag, task


@dag(
    dag_id="decide_experiment",
    tags=["fashion-search", "training"],
    **{
        **DAG_DEFAULTS,
        "schedule": timedelta(
            seconds=float(os.environ.get("FS_EXPERIMENTS__DECIDE_INTERVAL_S", "900"))
        ),
        "max_active_runs": 1,
    },
)
def decide_experiment() -> None:
    """One task: decide."""

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def decide() -> dict[str, Any]:
        from dataclasses import asdict

        from fashion_search.settings import get_settings
        from fashion_search.workflows.experiments import decide

        decided = decide(get_settings())
        return {"decided": None} if decided is None else {"decided": asdict(decided)}

    decide()


dag = decide_experiment()
