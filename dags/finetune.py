"""finetune: train with the run's parameters, evaluate against the champion on the same test
split, register, promote only if better, wait until the model server serves the champion, and
re-embed the catalog so stored embeddings come from the serving version.

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
    """Train + register -> model server serves the champion -> re-embed the catalog."""

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
    def wait_until_served() -> dict[str, Any]:
        from fashion_search.settings import get_settings
        from fashion_search.workflows.finetune import wait_until_served

        return wait_until_served(get_settings())

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def reembed_catalog() -> dict[str, Any]:
        from fashion_search.settings import get_settings
        from fashion_search.workflows.catalog import embed_products

        return embed_products(get_settings())

    run_conf = {name: f"{{{{ params.{name} }}}}" for name in PARAMS}
    train_model(**run_conf) >> wait_until_served() >> reembed_catalog()


dag = finetune()
