"""process_train_test_dataset: a deterministic train/test split stratified by articleType,
written as versioned parquet + manifest to the datasets bucket and logged to MLflow as the
run's dataset input. The version (returned as XCom) is what ``finetune`` takes.

Run conf: ``source``, ``limit``, ``test_percent`` (default 20), ``seed`` (default 0).
"""

from __future__ import annotations

from _project import DAG_DEFAULTS
from _tasks import split_dataset
from airflow.sdk import Param, dag


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
    split_dataset(
        source="{{ params.source }}",
        limit="{{ params.limit }}",
        test_percent="{{ params.test_percent }}",
        seed="{{ params.seed }}",
    )


dag = process_train_test_dataset()
