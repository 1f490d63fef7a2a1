"""finetune: train with the run's parameters, evaluate against the champion on the same test
split, register and export; if it is better, roll it out with zero downtime: the model server
loads it beside the champion, the catalog is embedded by it into a partition of its own while
the champion keeps serving, and the serving record and champion alias switch together once it
covers every product (the previous version stays for ``fashion-search rollback``).

Run conf: ``architecture`` (default: the offline default model), ``pretrained`` (tag or path),
``split_version`` (from process_train_test_dataset; default: content-hash split), ``source``,
``limit``, ``epochs``, ``batch_size``, ``lr``, ``seed``, ``precision``, ``feedback`` (train
on shoppers' logged clicks and "not relevant" marks too; the task's report and the MLflow run
say how many were used).
"""

from __future__ import annotations

from _project import DAG_DEFAULTS
from _tasks import roll_out, train_model
from airflow.sdk import Param, dag

OPTIONAL_INT = {"type": ["null", "integer"], "minimum": 1}
PARAMS = ("architecture", "pretrained", "split_version", "source", "limit", "epochs",
          "batch_size", "lr", "seed", "precision", "feedback")  # fmt: skip


@dag(
    dag_id="finetune",
    params={
        "architecture": Param(None, type=["null", "string"]),
        "pretrained": Param(None, type=["null", "string"]),
        "split_version": Param(None, type=["null", "string"]),
        "source": Param(None, type=["null", "string"]),
        "limit": Param(None, **OPTIONAL_INT),
        "epochs": Param(None, type=["null", "integer"], minimum=0),
        "batch_size": Param(None, **OPTIONAL_INT),
        "lr": Param(None, type=["null", "number"], exclusiveMinimum=0),
        "seed": Param(None, type=["null", "integer"]),
        "precision": Param(None, type=["null", "string"], enum=[None, "auto", "bf16", "fp32"]),
        "feedback": Param(False, type="boolean"),
    },
    tags=["fashion-search", "training"],
    **DAG_DEFAULTS,
)
def finetune() -> None:
    """Train + register -> (if better) load beside the champion -> build -> switch."""
    run_conf = {name: f"{{{{ params.{name} }}}}" for name in PARAMS}
    roll_out(train_model(**run_conf))


dag = finetune()
