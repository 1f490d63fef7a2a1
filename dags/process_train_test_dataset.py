"""process_train_test_dataset: a deterministic train/test split stratified by articleType,
written as versioned parquet + manifest to the datasets bucket and logged to MLflow as the
run's dataset input. The version (returned as XCom) is what ``finetune`` takes.

Run conf: ``source``, ``limit``, ``test_percent`` (default 20), ``seed`` (default 0).
"""

from __future__ import annotations

from typing import Any

from _project import DAG_DEFAULTS, PROJECT_PYTHON
from airflow.sdk import Param, dag, task


@dag(
    dag_id="process_train_test_dataset",
    params={
        "source": Param(None, type=["null", "string"]),
        "limit": Param(None, type=["null", "integer"], minimum=1),
        "test_percent": Param(20, type="integer", minimum=1, maximum=99),
        "seed": Param(0, type="integer"),
    },
    tags=["fashion-search", "training"],
    **DAG_DEFAULTS,
)
def process_train_test_dataset() -> None:
    """One task: split, store, log."""

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def split_dataset(
        source: str | None, limit: int | None, test_percent: int, seed: int
    ) -> dict[str, Any]:
        from dataclasses import asdict

        from fashion_search.settings import get_settings
        from fashion_search.workflows.splits import make_split

        settings = get_settings()
        manifest = make_split(
            settings, source or settings.dataset_source, limit, int(test_percent), int(seed)
        )
        return asdict(manifest)

    split_dataset(
        source="{{ params.source }}",
        limit="{{ params.limit }}",
        test_percent="{{ params.test_percent }}",
        seed="{{ params.seed }}",
    )


dag = process_train_test_dataset()
