"""The Airflow DAGs run with ``dag.test()`` (Airflow 3 in its own environment, tasks in the
project's Python) against the real stack on small slices."""

from __future__ import annotations

import ast
import json
import random
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.learning.feedback import Feedback
from fashion_search.model.factory import ModelSpec
from fashion_search.model.pipeline import train_and_register
from fashion_search.model.registry import champion, configure_mlflow
from fashion_search.model.train import TrainConfig
from fashion_search.settings import REPO_ROOT, Settings
from fashion_search.storage import ObjectStore
from fashion_search.workflows.splits import split_ids
from model_server.export import export_version
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
        export_version, limit=ROWS, progress=False,
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


def _reports(result: DagRunResult, key: str) -> list[dict[str, Any]]:
    """What the run's tasks whose reports have ``key`` returned (a mapped task's, one each)."""
    found = []
    for text in re.findall(r"Returned value was: (\{.*\})", result.log):
        report: dict[str, Any] = ast.literal_eval(text)
        if key in report:
            found.append(report)
    return found


def _report(result: DagRunResult, key: str) -> dict[str, Any]:
    """What the run's (first) task whose report has ``key`` returned."""
    found = _reports(result, key)
    assert found, f"no task returned a report with {key!r}"
    return found[0]


def _total(result: DagRunResult, report_key: str, field: str) -> int:
    """``field`` summed over the reports with ``report_key`` (the parts of a mapped task)."""
    return sum(int(report[field]) for report in _reports(result, report_key))


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
    shards = dags_settings.database.shards
    assert shards > 1  # the load and the embedding run as mapped tasks, one per part
    # The DAGs read the number in Airflow's Python, without the settings: the same default.
    project = (REPO_ROOT / "dags" / "_project.py").read_text()
    default = Settings().database.shards
    assert (
        f'os.environ.get("FS_DATABASE__SHARDS") or os.environ.get("FS_CATALOG_SHARDS", "{default}")'
        in project
    )
    result = _dag(airflow, dags_settings, "recreate_prod_database", {"limit": 40, "reset": True})
    assert result.state == "success", result.log[-3000:]
    assert _catalog(dags_settings) == [("1", 40)]
    # empty catalog: the parts load without the index, which the teardown builds once
    plan = _report(result, "parts")
    assert plan["bulk"] is True
    assert [(p["offset"], p["limit"]) for p in plan["parts"]] == [(0, 20), (20, 20)]
    parts = _reports(result, "loaded")
    assert sorted(p["offset"] for p in parts) == [0, 20]
    # each part embedded its batches from the images in hand; the embed shards found nothing
    assert (_total(result, "loaded", "loaded"), _total(result, "loaded", "embedded")) == (40, 40)
    embeds = _reports(result, "dimension")
    assert sorted(e["shard"] for e in embeds) == list(range(shards))
    assert _total(result, "dimension", "embedded") == 0
    assert _report(result, "indexed")["indexed"] == ["1"]
    with psycopg.connect(dags_settings.database.url) as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes").fetchall()}
    assert "product_embeddings_1_hnsw" in indexes

    # The model server is unreachable: the load parts grow the catalog without embeddings and
    # say why, the embed shards fail; what is stored stays consistent, and the next run
    # finishes the job, each shard embedding its own products.
    result = _dag(airflow, dags_settings, "recreate_prod_database", {"limit": 60},
                  FS_MODEL_SERVER__ADDRESS=f"127.0.0.1:{free_port()}")  # fmt: skip
    assert result.state == "failed"
    assert _report(result, "parts")["bulk"] is False
    parts = _reports(result, "loaded")
    assert (_total(result, "loaded", "loaded"), _total(result, "loaded", "embedded")) == (20, 0)
    assert all(p["embed_stopped"] for p in parts if p["loaded"])
    assert _catalog(dags_settings) == [("1", 40), (None, 20)]
    result = _dag(airflow, dags_settings, "recreate_prod_database", {"limit": 60})
    assert result.state == "success", result.log[-3000:]
    embeds = _reports(result, "dimension")
    assert sum(e["embedded"] for e in embeds) == 20
    assert all(e["embedded"] > 0 for e in embeds)  # both shards had products to embed
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
    from functions.events.bucket_event import build_bucket_event_function

    store.ensure_buckets([settings.storage.uploads_bucket])
    try:
        function = build_bucket_event_function(settings)
        assert reconcile_uploads(settings, function).outcomes == {"removed": 2}
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
    failed = _dag(airflow, dags_settings, "finetune", conf, FS_DATABASE__URL=unreachable)
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


def _versions(settings: Settings) -> set[str]:
    client = configure_mlflow(settings)
    return {v.version for v in client.search_model_versions(
        f"name='{settings.registry.model_name}'")}  # fmt: skip


def _record(settings: Settings, records: list[Feedback]) -> None:
    with create_pool(settings) as pool:
        for record in records:
            Catalog.of(pool).feedback.record(record)


def test_finetune_trains_on_logged_feedback_and_says_how_much(
    airflow: LocalAirflow, dags_settings: Settings, split_version: str
) -> None:
    """Clicks on three training products and a "not relevant" mark for one query: three
    extra pairs, each with the marked product as its hard negative; a click on a test product
    is not trained on (skipped)."""
    ids = split_ids(dags_settings, split_version)
    with psycopg.connect(dags_settings.database.url) as conn:
        in_catalog = {r[0] for r in conn.execute("SELECT id FROM products").fetchall()}
    train, test = sorted(ids["train"] & in_catalog), sorted(ids["test"] & in_catalog)
    query = f"shopper query {uuid.uuid4().hex[:6]}"

    def one(signal: str, product: int) -> Feedback:
        return Feedback(signal=signal, query=query, product_id=product, position=1,  # type: ignore[arg-type]
                        session_id="dags")  # fmt: skip

    _record(dags_settings, [*(one("click", p) for p in train[:3]), one("not_relevant", train[3]),
                            one("click", test[0])])  # fmt: skip
    conf = {"architecture": "fashion-tiny", "epochs": 1, "batch_size": 64, "lr": 5e-4,
            "limit": ROWS, "split_version": split_version, "precision": "fp32",
            "feedback": True}  # fmt: skip
    before = _versions(dags_settings)
    rollout = "^(prepare_rollout|build_candidate|switch_serving)$"  # the training is the point
    result = _dag(airflow, dags_settings, "finetune", conf, mark_success=rollout)
    assert result.state == "success", result.log[-3000:]
    used = {"feedback_pairs": 3, "feedback_hard_negatives": 3, "feedback_skipped": 1}
    assert _report(result, "feedback")["feedback"] == used
    [version] = _versions(dags_settings) - before
    client = configure_mlflow(dags_settings)
    params = client.get_run(
        client.get_model_version(dags_settings.registry.model_name, version).run_id
    ).data.params
    assert {name: int(params[name]) for name in used} == used


def _splits(settings: Settings) -> set[str]:
    listing = ObjectStore(settings).client.list_objects_v2(
        Bucket=settings.storage.datasets_bucket, Prefix="splits/"
    )
    return {obj["Key"].split("/")[1] for obj in listing.get("Contents", [])}


def _new_products(settings: Settings) -> int:
    """Products created since the champion's training run started."""
    client = configure_mlflow(settings)
    served = champion(client, settings.registry.model_name, settings.registry.model_alias)
    assert served is not None and served.run_id
    started = client.get_run(served.run_id).info.start_time / 1000
    with psycopg.connect(settings.database.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM products WHERE created_at > to_timestamp(%s)", (started,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_retrain_on_new_data_does_nothing_below_its_thresholds(
    airflow: LocalAirflow, dags_settings: Settings
) -> None:
    new = _new_products(dags_settings)
    before, splits = _versions(dags_settings), _splits(dags_settings)
    result = _dag(airflow, dags_settings, "retrain_on_new_data", {"epochs": 1},
                  FS_RETRAIN__MIN_NEW_PRODUCTS=str(new + 1))  # fmt: skip
    assert result.state == "success", result.log[-3000:]
    check = _report(result, "retrain")
    assert (check["retrain"], check["new_products"]) == (False, new)
    assert (_versions(dags_settings), _splits(dags_settings)) == (before, splits)  # nothing ran


def test_retrain_on_new_data_retrains_on_the_catalog_above_them(
    airflow: LocalAirflow, dags_settings: Settings
) -> None:
    """Ten products more, and as many new products as the threshold: one retraining, on a
    split of the catalog, from the champion's weights, registered (and rolled out only if
    better)."""
    loaded = _dag(airflow, dags_settings, "recreate_prod_database", {"limit": 70})
    assert loaded.state == "success", loaded.log[-3000:]
    new = _new_products(dags_settings)
    assert new >= 10
    client = configure_mlflow(dags_settings)
    served = champion(client, dags_settings.registry.model_name, dags_settings.registry.model_alias)
    assert served is not None
    before = _versions(dags_settings)
    result = _dag(airflow, dags_settings, "retrain_on_new_data",
                  {"epochs": 1, "batch_size": 16, "feedback": False},
                  FS_RETRAIN__MIN_NEW_PRODUCTS=str(new))  # fmt: skip
    assert result.state == "success", result.log[-3000:]
    assert _report(result, "retrain")["retrain"] is True
    [version] = _versions(dags_settings) - before
    run = client.get_run(client.get_model_version(
        dags_settings.registry.model_name, version).run_id)  # fmt: skip
    assert run.data.params["pretrained"] == f"{served.name} v{served.version}"
    manifest = _report(result, "article_types")
    assert manifest["source"] == "catalog" and run.data.params["split_id"] == manifest["version"]
    with psycopg.connect(dags_settings.database.url) as conn:
        row = conn.execute("SELECT count(*) FROM products").fetchone()
    assert row is not None and sum(manifest["counts"].values()) == row[0]
    assert any(name.startswith("champion_") for name in run.data.metrics)  # "only if better"
    now = champion(client, dags_settings.registry.model_name, dags_settings.registry.model_alias)
    assert now is not None
    assert (now.version == version) == (run.data.tags["better"] == "true")


def test_retraining_is_due_when_upload_labels_drift(dags_settings: Settings) -> None:
    """Uploads made and labelled by the upload path; the drift is the champion's baseline
    less their mean articleType confidence, and decides at its threshold."""
    from fashion_search.dataset import iter_dataset
    from fashion_search.learning.retraining import check_retraining
    from fashion_search.model.evaluate import DRIFT_BASELINE
    from fashion_search.workflows.uploads import reconcile_uploads
    from functions.events.bucket_event import build_bucket_event_function

    run = uuid.uuid4().hex[:6]
    settings = dags_settings.replace(
        storage={"uploads_bucket": f"test-drift-{run}-uploads"},
        ingest={"reconcile_min_age_s": 0.0},
        retrain={"min_new_products": 10**6, "drift_uploads": 3},
    )
    store = ObjectStore(settings)
    store.ensure_buckets([settings.storage.uploads_bucket])
    function = build_bucket_event_function(settings)
    try:
        for item in iter_dataset(settings.dataset_source, offset=ROWS, limit=3):
            store.put(settings.storage.uploads_bucket, f"drift/{item.fields.id}.jpg", item.image)
        assert reconcile_uploads(settings, function).outcomes == {"created": 3}
        with psycopg.connect(settings.database.url) as conn:
            rows = conn.execute(
                "SELECT (label_confidence->>'articleType')::float FROM products"
                " WHERE source_bucket = %s",
                (settings.storage.uploads_bucket,),
            ).fetchall()
        confidences = [r[0] for r in rows]
        client = configure_mlflow(settings)
        served = champion(client, settings.registry.model_name, settings.registry.model_alias)
        assert served is not None and served.run_id
        baseline = client.get_run(served.run_id).data.metrics[DRIFT_BASELINE]
        check = check_retraining(settings)
        assert check.recent_uploads == 3
        assert check.recent_confidence == pytest.approx(sum(confidences) / 3)
        assert check.drift == pytest.approx(baseline - sum(confidences) / 3)
        drift = check.drift
        assert drift is not None
        above = check_retraining(settings.replace(retrain={"drift_threshold": abs(drift) + 0.01}))
        assert not above.retrain and "drift" in above.reason
        if drift > 0:
            at = check_retraining(settings.replace(retrain={"drift_threshold": drift}))
            assert at.retrain and "drift" in at.reason
        fewer = check_retraining(settings.replace(retrain={"drift_uploads": 4}))
        assert fewer.drift is None and "not measured" in fewer.reason
    finally:
        for key in [o["Key"] for o in store.client.list_objects_v2(
                Bucket=settings.storage.uploads_bucket).get("Contents", [])]:  # fmt: skip
            store.client.delete_object(Bucket=settings.storage.uploads_bucket, Key=key)
        reconcile_uploads(settings, function)  # their products leave the catalog
        store.delete_bucket(settings.storage.uploads_bucket)


def _candidate(settings: Settings) -> str:
    """A registered version whose training run says it beats the champion (untrained: its
    quality is the shoppers' simulated clicks' to say)."""
    outcome = train_and_register(
        settings, ModelSpec("fashion-tiny"), TrainConfig(epochs=0), settings.dataset_source,
        export_version, limit=ROWS, progress=False,
    )  # fmt: skip
    configure_mlflow(settings).set_tag(outcome.version.run_id, "better", "true")
    return str(outcome.version.version)


def _shoppers(settings: Settings, experiment: int, click: dict[str, float]) -> None:
    """80 SIMULATED sessions of 2 searches each, assigned as the API would; a search is clicked
    (position 1) with its arm's probability."""
    from fashion_search.experiments.assignment import assign

    rng = random.Random(experiment)
    with create_pool(settings) as pool:
        catalog = Catalog.of(pool)
        running = catalog.experiments.get(experiment)
        product = catalog.products.list_products(limit=1).items[0].id
        for n in range(80):
            session = f"sim-{experiment}-{n}"
            arm = assign(experiment, running.design, session).name
            for _ in range(2):
                search = catalog.experiments.record_search(experiment, arm, session)
                if rng.random() < click[arm]:
                    catalog.feedback.record(Feedback(
                        signal="click", query="shirt", product_id=product, position=1,
                        session_id=session, search_id=search))  # fmt: skip


def test_finetune_tries_a_candidate_on_shoppers_and_switches_only_when_it_wins(
    airflow: LocalAirflow, dags_settings: Settings
) -> None:
    """With FS_EXPERIMENTS__ROLLOUT_SHARE, finetune's better candidate gets an experiment
    instead of the switch; decide_experiment waits, then promotes a winner (it serves, with
    the decision on its MLflow run) and retires a loser."""
    client, name = configure_mlflow(dags_settings), dags_settings.registry.model_name
    share = {"FS_EXPERIMENTS__ROLLOUT_SHARE": "0.5", "FS_EXPERIMENTS__MIN_SESSIONS": "20"}
    for wins in (True, False):
        served = champion(client, name, dags_settings.registry.model_alias)
        assert served is not None
        version = _candidate(dags_settings)
        tried = _dag(airflow, dags_settings, "finetune", {}, mark_success="^train_model$",
                     **share)  # fmt: skip
        assert tried.state == "success", tried.log[-3000:]
        experiment = _report(tried, "experiment")
        assert (experiment["version"], experiment["share"]) == (version, 0.5)
        assert _catalog(dags_settings) == [(served.version, _product_count(dags_settings))]
        waiting = _dag(airflow, dags_settings, "decide_experiment", {}, **share)
        assert _report(waiting, "decided")["decided"]["outcome"] == "waiting"
        clicks = {"champion": 0.1, "candidate": 0.9} if wins else {"champion": 0.9,
                                                                  "candidate": 0.1}  # fmt: skip
        _shoppers(dags_settings, experiment["experiment"], clicks)
        decided = _dag(airflow, dags_settings, "decide_experiment", {}, **share)
        assert decided.state == "success", decided.log[-3000:]
        outcome = _report(decided, "decided")["decided"]
        assert outcome["outcome"] == ("promoted" if wins else "retired"), outcome
        now = champion(client, name, dags_settings.registry.model_alias)
        assert now is not None and now.version == (version if wins else served.version)
        run = client.get_run(client.get_model_version(name, version).run_id)
        assert run.data.tags["experiment_outcome"] == outcome["outcome"]
        assert "experiment_p_value" in run.data.metrics
        with create_pool(dags_settings) as pool:
            catalog = Catalog.of(pool)
            assert catalog.versions.get(version).state == ("serving" if wins else "retired")
            assert catalog.experiments.running() is None


def _product_count(settings: Settings) -> int:
    with psycopg.connect(settings.database.url) as conn:
        row = conn.execute("SELECT count(*) FROM products").fetchone()
    return int(row[0]) if row else 0
