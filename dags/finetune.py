"""finetune: train with the run's parameters, evaluate against the champion on the same test
split, register and export; if it is better, roll it out with zero downtime: the model server
loads it beside the champion, the catalog is embedded by it into a partition of its own while
the champion keeps serving, and the serving record and champion alias switch together once it
covers every product (the previous version stays for ``fashion-search rollback``).

Run conf: ``architecture`` (default fashion-compact), ``pretrained`` (tag or checkpoint path),
``split_version`` (from process_train_test_dataset; default: content-hash split), ``source``,
``limit``, ``epochs``, ``batch_size``, ``lr``, ``seed``, ``precision``.
"""

from __future__ import annotations

from typing import Any

from _project import DAG_DEFAULTS, PROJECT_PYTHON
from airflow.sdk import Param, dag, task

OPTIONAL_INT = {"type": ["null", "integer"], "minimum": 1}
PARAMS = ("architecture", "pretrained", "split_version", "source", "limit", "epochs",
          "batch_size", "lr", "seed", "precision")  # fmt: skip


@dag(
    dag_id="finetune",
    params={
        "architecture": Param("fashion-compact", type="string"),
        "pretrained": Param(None, type=["null", "string"]),
        "split_version": Param(None, type=["null", "string"]),
        "source": Param(None, type=["null", "string"]),
        "limit": Param(None, **OPTIONAL_INT),
        "epochs": Param(None, type=["null", "integer"], minimum=0),
        "batch_size": Param(None, **OPTIONAL_INT),
        "lr": Param(None, type=["null", "number"], exclusiveMinimum=0),
        "seed": Param(None, type=["null", "integer"]),
        "precision": Param(None, type=["null", "string"], enum=[None, "bf16", "fp32"]),
    },
    tags=["fashion-search", "training"],
    **DAG_DEFAULTS,
)
def finetune() -> None:
    """Train + register -> (if better) load beside the champion -> build -> switch."""

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def train_model(
        architecture: str, pretrained: str | None, split_version: str | None,
        source: str | None, limit: int | None, epochs: int | None, batch_size: int | None,
        lr: float | None, seed: int | None, precision: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        from fashion_search.settings import get_settings
        from fashion_search.workflows.finetune import train_model

        settings = get_settings()
        return train_model(
            settings, source or settings.dataset_source, architecture, pretrained,
            split_version, limit, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
            precision=precision,
        )  # fmt: skip

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def prepare_rollout(trained: dict[str, Any] | None) -> dict[str, Any]:
        from fashion_search.settings import get_settings
        from fashion_search.workflows.finetune import latest_training
        from fashion_search.workflows.rollout import prepare, retire_expired

        settings = get_settings()
        trained = trained or latest_training(settings)  # None: train_model marked done
        retired = retire_expired(settings)["retired"]  # versions whose rollback window ended
        if not trained["better"]:
            return {"skipped": f"version {trained['version']} does not beat the champion",
                    "retired": retired}  # fmt: skip
        return prepare(settings, trained["version"])

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def build_candidate(prepared: dict[str, Any]) -> dict[str, Any]:
        from fashion_search.settings import get_settings
        from fashion_search.workflows.rollout import build

        if "skipped" in prepared or prepared["state"] == "serving":
            return {**prepared, "skipped": prepared.get("skipped", "already serving")}
        return build(get_settings(), prepared["version"])

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def switch_serving(built: dict[str, Any]) -> dict[str, Any]:
        from fashion_search.settings import get_settings
        from fashion_search.workflows.rollout import switch

        if "skipped" in built:
            return built
        return switch(get_settings(), built["version"])

    run_conf = {name: f"{{{{ params.{name} }}}}" for name in PARAMS}
    switch_serving(build_candidate(prepare_rollout(train_model(**run_conf))))


dag = finetune()
