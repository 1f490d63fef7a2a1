"""retrain_on_new_data: scheduled on the catalog asset (updated by recreate_prod_database's
load and by reconcile_uploads), it checks whether retraining is due (enough new products since
the champion was trained, or drifting upload labels: :mod:`fashion_search.learning.retraining`)
and if so runs process_train_test_dataset's split and finetune's steps on the catalog as it is
now: a new split of the catalog's trusted products, the champion trained on from its weights
(with shoppers' feedback pairs), evaluated against the champion on that split, rolled out only
if it is better. Below the thresholds everything after the check is skipped.

Run conf (a manual run): ``source`` (default ``catalog``), ``limit``, ``epochs``,
``batch_size``, ``lr``, ``seed``, ``feedback`` (default true).
"""

from __future__ import annotations

from typing import Any

from _project import CATALOG_ASSET, DAG_DEFAULTS, PROJECT_PYTHON
from _tasks import roll_out, split_dataset, train_model
from airflow.sdk import Param, dag, task

OPTIONAL_INT = {"type": ["null", "integer"], "minimum": 1}


@dag(
    dag_id="retrain_on_new_data",
    params={
        "source": Param("catalog", type="string"),
        "limit": Param(None, **OPTIONAL_INT),
        "epochs": Param(None, type=["null", "integer"], minimum=0),
        "batch_size": Param(None, **OPTIONAL_INT),
        "lr": Param(None, type=["null", "number"], exclusiveMinimum=0),
        "seed": Param(None, type=["null", "integer"]),
        "feedback": Param(True, type="boolean"),
    },
    tags=["fashion-search", "training"],
    **{**DAG_DEFAULTS, "schedule": [CATALOG_ASSET], "max_active_runs": 1},
)
def retrain_on_new_data() -> None:
    """Check -> (if due) split the catalog -> train from the champion -> roll out if better."""

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def check_retraining() -> dict[str, Any]:
        from fashion_search.learning.retraining import check_retraining
        from fashion_search.settings import get_settings

        return check_retraining(get_settings()).to_dict()

    @task.short_circuit
    def retraining_due(check: dict[str, Any]) -> bool:
        print(f"retraining due: {check['retrain']} ({check['reason']})")
        return bool(check["retrain"])

    split = split_dataset(
        source="{{ params.source }}", limit="{{ params.limit }}", test_percent=20, seed=0
    )
    retraining_due(check_retraining()) >> split
    trained = train_model(
        architecture="", pretrained="champion", split_version=split["version"],
        source="{{ params.source }}", limit="{{ params.limit }}", epochs="{{ params.epochs }}",
        batch_size="{{ params.batch_size }}", lr="{{ params.lr }}", seed="{{ params.seed }}",
        precision=None, feedback="{{ params.feedback }}",
    )  # fmt: skip
    roll_out(trained)


dag = retrain_on_new_data()
