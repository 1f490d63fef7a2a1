"""The Airflow DAGs run with ``dag.test()`` (Airflow 3 in its own environment, tasks in the
project's Python) against the real stack on small slices."""

from __future__ import annotations

import ast
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from fashion_search.embedding_client import EmbeddingClient
from fashion_search.model.factory import ModelSpec
from fashion_search.model.pipeline import train_and_register
from fashion_search.model.registry import champion, configure_mlflow
from fashion_search.model.train import TrainConfig
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore
from stack.airflow import DagRunResult, LocalAirflow
from stack.postgres import create_database
from stack.topics import ensure_topics
from tests.helpers import child_env, database, free_port, start_model_server

ROWS = 300


@pytest.fixture(scope="module")
def dags_settings(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """An empty database for the DAGs, a model name whose v1 (untrained) is the champion, and
    a model server serving it that polls the alias every second."""
    run = uuid.uuid4().hex[:6]
    port = free_port()
    dags = settings.replace(
        top={"cache_dir": tmp_path_factory.mktemp("dags-cache")},
        database=database(settings, f"{settings.database.name}_dags"),
        registry={"model_name": f"dags-clip-{run}"},
        model_server={"port": port, "address": f"127.0.0.1:{port}", "reload_interval_s": 1.0},
    )
    admin = make_conninfo(settings.database.url, dbname="postgres")
    create_database(admin, dags.database.name)
    train_and_register(
        dags, ModelSpec("fashion-tiny"), TrainConfig(epochs=0), dags.dataset_source,
        limit=ROWS, progress=False,
    )  # fmt: skip
    server = start_model_server(dags, tmp_path_factory.mktemp("dags-model-server"))
    try:
        yield dags
    finally:
        server.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dags.database.name))
            )


@pytest.fixture(scope="module")
def airflow(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> LocalAirflow:
    return LocalAirflow(settings, tmp_path_factory.mktemp("airflow-home"))


def _dag(
    airflow: LocalAirflow, settings: Settings, dag_id: str, conf: dict[str, Any],
    mark_success: str = "", **env: str,
) -> DagRunResult:  # fmt: skip
    """Run a DAG once, its tasks without retries, with ``settings`` (and ``env``) as FS_*."""
    variables = {**child_env(settings), "FS_DAG_TASK_RETRIES": "0", **env}
    return airflow.test_dag(dag_id, conf, variables, mark_success)


def _report(result: DagRunResult, key: str) -> dict[str, Any]:
    """What the run's task whose report has ``key`` returned."""
    for text in re.findall(r"Returned value was: (\{.*\})", result.log):
        report: dict[str, Any] = ast.literal_eval(text)
        if key in report:
            return report
    raise AssertionError(f"no task returned a report with {key!r}")


def _model_server_default(settings: Settings, version: str, timeout_s: float = 60) -> bool:
    """Whether the model server's default (champion) becomes ``version`` within ``timeout_s``
    (it follows the alias at its reload interval; readers name their version meanwhile)."""
    deadline = time.monotonic() + timeout_s
    with EmbeddingClient(settings.model_server.address) as model_server:
        while model_server.info().registry_version != version:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
    return True


def _catalog(settings: Settings) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database.url) as conn:
        return conn.execute(
            "SELECT e.model_version, count(*) FROM products p LEFT JOIN (product_embeddings e"
            " JOIN catalog_versions v ON v.model_version = e.model_version AND v.state = 'serving')"
            " ON e.product_id = p.id GROUP BY 1 ORDER BY 1 NULLS LAST"
        ).fetchall()


def test_recreate_prod_database_loads_embeds_and_resumes_after_a_failed_task(
    airflow: LocalAirflow, dags_settings: Settings
) -> None:
    result = _dag(airflow, dags_settings, "recreate_prod_database", {"limit": 40, "reset": True})
    assert result.state == "success", result.log[-3000:]
    assert _catalog(dags_settings) == [("1", 40)]
    # the load embedded every batch from the images in hand; the embed task found nothing left
    loaded = _report(result, "loaded")
    assert (loaded["bulk"], loaded["embedded"]) == (True, 40)  # empty catalog: index built after
    assert _report(result, "dimension")["embedded"] == 0
    with psycopg.connect(dags_settings.database.url) as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes").fetchall()}
    assert "product_embeddings_1_hnsw" in indexes

    # The model server is unreachable: the load task grows the catalog without embeddings and
    # says why, the embed task fails; what is stored stays consistent, and the next run
    # finishes the job.
    result = _dag(airflow, dags_settings, "recreate_prod_database", {"limit": 60},
                  FS_MODEL_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")  # fmt: skip
    assert result.state == "failed"
    loaded = _report(result, "loaded")
    assert (loaded["loaded"], loaded["embedded"], loaded["bulk"]) == (20, 0, False)
    assert loaded["embed_stopped"]
    assert _catalog(dags_settings) == [("1", 40), (None, 20)]
    result = _dag(airflow, dags_settings, "recreate_prod_database", {"limit": 60})
    assert result.state == "success", result.log[-3000:]
    assert _report(result, "dimension")["embedded"] == 20
    assert _catalog(dags_settings) == [("1", 60)]


def test_reconcile_uploads_processes_objects_whose_events_were_lost(
    airflow: LocalAirflow, dags_settings: Settings
) -> None:
    """The scheduled reconciliation on a bucket that announces nothing: every upload's event
    is "lost", and the DAG makes their products (the catalog is the one loaded above)."""
    from fashion_search.dataset import iter_dataset

    run = uuid.uuid4().hex[:6]
    settings = dags_settings.replace(
        storage={"uploads_bucket": f"test-dags-{run}-uploads"},
        kafka={"output_topic": f"test-{run}.dags.products",
               "dead_letter_topic": f"test-{run}.dags.dead-letter"},
        ingest={"reconcile_min_age_s": 0.0},
    )  # fmt: skip
    ensure_topics(settings, (settings.kafka.output_topic, settings.kafka.dead_letter_topic))
    store = ObjectStore(settings)
    store.ensure_buckets([settings.storage.uploads_bucket])
    try:
        for item in iter_dataset(settings.dataset_source, offset=ROWS, limit=2):
            store.put(settings.storage.uploads_bucket, f"lost/{item.fields.id}.jpg", item.image)
        result = _dag(airflow, settings, "reconcile_uploads", {})
        assert result.state == "success", result.log[-3000:]
        assert _report(result, "missing") == {
            "bucket": settings.storage.uploads_bucket, "missing": 2, "deleted": 0,
            "outcomes": {"created": 2},
        }  # fmt: skip
    finally:
        store.delete_bucket(settings.storage.uploads_bucket)
    # The objects deleted (their removal events "lost" too), reconciliation removes their
    # products: the catalog is the one loaded above again.
    from fashion_search.workflows.uploads import reconcile_uploads

    store.ensure_buckets([settings.storage.uploads_bucket])
    try:
        assert reconcile_uploads(settings)["outcomes"] == {"removed": 2}
    finally:
        store.delete_bucket(settings.storage.uploads_bucket)
    assert _catalog(settings) == [("1", 60)]


@pytest.fixture(scope="module")
def split_version(airflow: LocalAirflow, dags_settings: Settings) -> str:
    """The split made by process_train_test_dataset on ROWS products."""
    result = _dag(airflow, dags_settings, "process_train_test_dataset", {"limit": ROWS})
    assert result.state == "success", result.log[-3000:]
    listing = ObjectStore(dags_settings).client.list_objects_v2(
        Bucket=dags_settings.storage.datasets_bucket, Prefix="splits/"
    )
    versions = {obj["Key"].split("/")[1] for obj in listing.get("Contents", [])}
    assert len(versions) == 1
    return versions.pop()


def test_process_train_test_dataset_is_stratified_deterministic_and_logged(
    airflow: LocalAirflow, dags_settings: Settings, split_version: str
) -> None:
    store = ObjectStore(dags_settings)
    manifest = json.loads(
        store.get(dags_settings.storage.datasets_bucket, f"splits/{split_version}/manifest.json")
    )
    assert manifest["version"] == split_version
    assert sum(manifest["counts"].values()) == ROWS
    for article, counts in manifest["article_types"].items():
        total = sum(counts.values())
        assert counts.get("test", 0) == round(total * 20 / 100), article  # in every class
    # Same inputs, same version: running again writes the same split.
    again = _dag(airflow, dags_settings, "process_train_test_dataset", {"limit": ROWS})
    assert again.state == "success"
    listing = store.client.list_objects_v2(
        Bucket=dags_settings.storage.datasets_bucket, Prefix="splits/"
    )
    assert {obj["Key"].split("/")[1] for obj in listing["Contents"]} == {split_version}
    client = configure_mlflow(dags_settings)
    experiment = client.get_experiment_by_name("fashion-datasets")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id],
                              f"params.version = '{split_version}'")  # fmt: skip
    assert runs and {d.dataset.name for d in runs[0].inputs.dataset_inputs} == {
        f"{split_version}-train", f"{split_version}-test",
    }  # fmt: skip


def test_finetune_registers_promotes_serves_and_reembeds(
    airflow: LocalAirflow, dags_settings: Settings, split_version: str
) -> None:
    catalog = _dag(airflow, dags_settings, "recreate_prod_database", {"limit": 60})
    assert catalog.state == "success"  # (already done: a no-op) the catalog to re-embed
    conf = {"architecture": "fashion-tiny", "epochs": 1, "batch_size": 64, "lr": 5e-4,
            "limit": ROWS, "split_version": split_version, "precision": "fp32"}  # fmt: skip
    result = _dag(airflow, dags_settings, "finetune", conf)
    assert result.state == "success", result.log[-3000:]

    client = configure_mlflow(dags_settings)
    version = client.get_model_version(dags_settings.registry.model_name, "2")
    run = client.get_run(version.run_id)
    assert run.data.params["split_id"] == split_version
    # evaluated against the champion (v1) on the same split
    assert any(name.startswith("champion_") for name in run.data.metrics)
    served = champion(client, dags_settings.registry.model_name, dags_settings.registry.model_alias)
    assert served is not None
    assert _model_server_default(dags_settings, served.version)
    # The serving version covers every product; a better version was rolled out to it.
    assert _catalog(dags_settings) == [(served.version, 60)]
    assert (served.version == "2") == (run.data.tags["better"] == "true")


def test_finetune_resumes_after_its_serving_step_failed_without_a_second_version(
    airflow: LocalAirflow, dags_settings: Settings, split_version: str
) -> None:
    """The catalog database is unreachable for this run: training registers a version, then
    the rollout fails; running only the remaining tasks again ends consistent, with no new
    version."""
    client = configure_mlflow(dags_settings)
    before = {
        v.version
        for v in client.search_model_versions(f"name='{dags_settings.registry.model_name}'")
    }
    conf = {"architecture": "fashion-tiny", "epochs": 1, "batch_size": 64, "lr": 5e-4,
            "limit": ROWS, "split_version": split_version, "precision": "fp32",
            "seed": 1}  # fmt: skip
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    failed = _dag(airflow, dags_settings, "finetune", conf, FS_DATABASE_URL=unreachable)
    assert failed.state == "failed"
    after = {
        v.version
        for v in client.search_model_versions(f"name='{dags_settings.registry.model_name}'")
    }
    assert len(after - before) == 1  # registered once

    retried = _dag(airflow, dags_settings, "finetune", conf, mark_success="^train_model$")
    assert retried.state == "success", retried.log[-3000:]
    assert {v.version for v in client.search_model_versions(
        f"name='{dags_settings.registry.model_name}'")} == after  # fmt: skip
    served = champion(client, dags_settings.registry.model_name, dags_settings.registry.model_alias)
    assert served is not None
    assert _model_server_default(dags_settings, served.version)
    [(version, _)] = _catalog(dags_settings)
    assert version == served.version
