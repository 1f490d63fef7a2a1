"""The tasks the DAGs share, each a thin wrapper over a step of ``fashion_search/workflows/``
run in the project's Python: the split of ``process_train_test_dataset``, the train ->
rollout chain of ``finetune``, both also run by ``retrain_on_new_data``."""

from __future__ import annotations

from typing import Any

from _project import CATALOG_SHARDS, PROJECT_PYTHON
from airflow.sdk import task


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


@task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
def train_model(
    architecture: str | None, pretrained: str | None, split_version: str | None,
    source: str | None, limit: int | None, epochs: int | None, batch_size: int | None,
    lr: float | None, seed: int | None, precision: str | None, feedback: bool,
) -> dict[str, Any]:  # fmt: skip
    from dataclasses import asdict

    from fashion_search.settings import get_settings
    from fashion_search.workflows.finetune import train_model
    from model_server.export import export_version

    settings = get_settings()
    return asdict(train_model(
        settings, source or settings.dataset_source, export_version, architecture, pretrained,
        split_version, limit, bool(feedback), epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, precision=precision,
    ))  # fmt: skip


@task
def items_of(report: dict[str, Any], key: str) -> list[Any]:
    """The list ``report[key]``: what a mapped task expands over (Airflow maps over a task's
    return value only). Runs in Airflow's own Python: nothing of the project's."""
    return list(report[key])


@task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
def prepare_rollout(trained: dict[str, Any] | None) -> dict[str, Any]:
    from dataclasses import asdict

    from fashion_search.settings import get_settings
    from fashion_search.workflows.finetune import latest_training
    from fashion_search.workflows.rollout import prepare, retire_expired

    settings = get_settings()
    trained = trained or asdict(latest_training(settings))  # None: train_model marked done
    retired = retire_expired(settings)  # versions whose rollback window ended
    if not trained["better"]:
        return {"skipped": f"version {trained['version']} does not beat the champion",
                "retired": retired}  # fmt: skip
    return asdict(prepare(settings, trained["version"]))


@task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
def build_candidate(prepared: dict[str, Any], shard: dict[str, int]) -> dict[str, Any]:
    from dataclasses import asdict

    from fashion_search.catalog.shards import Shard
    from fashion_search.settings import get_settings
    from fashion_search.workflows.rollout import build

    if "skipped" in prepared or prepared["state"] == "serving":
        return {"skipped": prepared.get("skipped", "already serving")}
    return asdict(build(get_settings(), prepared["version"], shard=Shard.from_dict(shard)))


@task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
def switch_serving(prepared: dict[str, Any]) -> dict[str, Any]:
    """The switch; with FS_EXPERIMENTS__ROLLOUT_SHARE > 0, an experiment instead (the switch
    waits for its verdict: decide_experiment)."""
    from dataclasses import asdict

    from fashion_search.settings import get_settings
    from fashion_search.workflows.experiments import trial
    from fashion_search.workflows.rollout import switch

    if "skipped" in prepared or prepared["state"] == "serving":
        return {**prepared, "skipped": prepared.get("skipped", "already serving")}
    settings = get_settings()
    if settings.experiments.rollout_share > 0:
        return asdict(trial(settings, prepared["version"]))
    return asdict(switch(settings, prepared["version"]))


def roll_out(trained: Any) -> Any:
    """prepare_rollout -> build_candidate (a mapped task per catalog shard, CATALOG_SHARDS) ->
    switch_serving after ``trained``."""
    prepared = prepare_rollout(trained)
    built = build_candidate.partial(prepared=prepared).expand(shard=CATALOG_SHARDS)
    switched = switch_serving(prepared)
    built >> switched
    return switched
