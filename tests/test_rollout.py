"""Zero-downtime rollout against the real stack and a real model server, with tiny CLIPs on a
small slice: searches at concurrency 4 through whole rollouts (same dimension, and another)
fail never, come back empty never, and compare each query only with vectors of the version
that embedded it; uploads during a build are searchable before and after the switch; rollback
is instant; a killed build resumes and never switches early; a query embedded by another
version than the serving one is refused, never compared.

The tests run in order on one catalog: v1 serves -> rollout to v2 -> rollback to v1 -> rollout
to v3 (48-d) -> a killed rollout of v2 resumed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import numpy as np
import pytest

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.versions import IncompleteVersionError
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import (
    EmbeddingClient,
    Embeddings,
    ModelVersionNotLoadedError,
)
from fashion_search.errors import ServingVersionUnavailableError
from fashion_search.ingest.events import ObjectCreated
from fashion_search.ingest.processor import UploadProcessor
from fashion_search.model.factory import ModelSpec
from fashion_search.model.pipeline import train_and_register
from fashion_search.model.train import TrainConfig
from fashion_search.search.service import SearchService
from fashion_search.settings import REPO_ROOT, Settings
from fashion_search.storage import ObjectStore
from fashion_search.workflows import rollout
from functions.api.errors import status_of
from model_server.export import export_version
from tests.conftest import catalog_database
from tests.helpers import child_env, database, free_port, start_model_server

ROWS = 240
QUERIES = ["navy blue shirt", "black watch", "red dress for women", "sports shoes", "handbag"]
TINY = TrainConfig(epochs=1, batch_size=64, lr=5e-4, warmup_steps=2)


@pytest.fixture(scope="module")
def rollout_settings(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """v1 (64-d) the champion, served by a real model server, and a catalog of ROWS products
    embedded by it; v2 (64-d) and v3 (48-d) registered."""
    port = free_port()
    rolled = settings.replace(
        top={"cache_dir": tmp_path_factory.mktemp("rollout-cache")},
        database=database(settings, f"{settings.database.name}_rollout"),
        registry={"model_name": f"rollout-clip-{uuid.uuid4().hex[:6]}", "serve_timeout_s": 60},
        model_server={"port": port, "address": f"127.0.0.1:{port}", "reload_interval_s": 0.3},
        rollout={"grace_s": 3600},
    )
    source = rolled.dataset_source
    for spec, seed in (("fashion-tiny", 0), ("fashion-tiny", 1), ("fashion-tiny-48", 2)):
        train_and_register(rolled, ModelSpec(spec), replace(TINY, seed=seed), source,
                           export_version, limit=ROWS, progress=False)  # fmt: skip
    server = start_model_server(rolled, tmp_path_factory.mktemp("rollout-model-server"))
    try:
        with catalog_database(rolled, ROWS):
            yield rolled
    finally:
        server.stop()


@pytest.fixture(scope="module")
def catalog(rollout_settings: Settings) -> Iterator[Catalog]:
    with create_pool(rollout_settings) as pool:
        yield Catalog.of(pool)


@pytest.fixture(scope="module")
def client(rollout_settings: Settings) -> Iterator[EmbeddingClient]:
    with EmbeddingClient(rollout_settings.model_server.address) as embedder:
        yield embedder


@pytest.fixture(scope="module")
def service(rollout_settings: Settings, catalog: Catalog, client: EmbeddingClient) -> SearchService:
    return SearchService(rollout_settings, catalog, ObjectStore(rollout_settings), client)


@dataclass
class Answer:
    query: str
    version: str | None
    hits: list[tuple[int, float]]


class SearchLoop:
    """Vector text searches from 4 threads until stopped; every answer and error is kept."""

    def __init__(self, service: SearchService) -> None:
        self.service = service
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(4)]

    def _run(self, offset: int) -> None:
        n = offset
        while not self._stop.is_set():
            query = QUERIES[n % len(QUERIES)]
            n += 1
            try:
                result = self.service.text(query, k=5, mode="vector")
            except Exception as error:
                self.errors.append(repr(error))
                continue
            hits = [(h.product.id, h.similarity or 0.0) for h in result.hits]
            self.answers.append(Answer(query, result.model_version, hits))

    def __enter__(self) -> SearchLoop:
        for thread in self._threads:
            thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _check_answers(loop: SearchLoop, catalog: Catalog, client: EmbeddingClient) -> set[str]:
    """No errors, no empty answer; each hit's similarity is the cosine similarity of the
    query embedded by the answer's version with that version's stored vectors."""
    assert not loop.errors, loop.errors[:5]
    assert loop.answers and all(len(a.hits) == 5 for a in loop.answers)
    versions = {a.version for a in loop.answers}
    expected: dict[tuple[str, str], np.ndarray] = {}
    for answer in loop.answers:
        assert answer.version is not None
        key = (answer.query, answer.version)
        if key not in expected:
            expected[key] = client.embed_texts([answer.query], answer.version).vectors[0]
        record = catalog.versions.get(answer.version)
        for product_id, score in answer.hits:
            stored = catalog.products.get(product_id, record).embedding
            assert stored is not None, (answer.version, product_id)
            assert float(expected[key] @ stored) == pytest.approx(score, abs=1e-4)
    return {v for v in versions if v}


def _serving(catalog: Catalog) -> str:
    return catalog.versions.serving().model_version


def _upload(settings: Settings, store: ObjectStore, key: str, image: bytes) -> ObjectCreated:
    bucket = settings.storage.uploads_bucket
    etag = store.put(bucket, key, image)
    return ObjectCreated(bucket, key, etag, len(image), "s3:ObjectCreated:Put")


def _top_hit_of_image(service: SearchService, image: bytes) -> tuple[int, str | None]:
    result = service.image(image, k=1)
    return result.hits[0].product.id, result.model_version


def test_a_rollout_of_the_same_dimension_under_search_load_and_uploads(
    rollout_settings: Settings, catalog: Catalog, client: EmbeddingClient, service: SearchService
) -> None:
    assert _serving(catalog) == "1"
    store = ObjectStore(rollout_settings)
    processor = UploadProcessor(rollout_settings, catalog, store, client)
    held_out = next(iter_dataset(rollout_settings.dataset_source, offset=ROWS, limit=1)).image
    with SearchLoop(service) as loop:
        prepared = rollout.prepare(rollout_settings, "2")
        assert prepared.state == "building" and prepared.dimension == 64
        # An upload during the build: searchable under v1 now, embedded into v2 as well.
        [outcome] = processor.process([_upload(rollout_settings, store, "during/1.jpg", held_out)])
        product_id = outcome.results[0].id  # type: ignore[union-attr]
        assert _top_hit_of_image(service, held_out) == (product_id, "1")
        assert catalog.products.get(product_id, catalog.versions.get("2")).embedding is not None
        built = rollout.build(rollout_settings, "2", batch_size=8)
        assert built.coverage_percent == 100.0
        assert catalog.versions.get("2").state == "ready" and _serving(catalog) == "1"
        switched = rollout.switch(rollout_settings, "2")
        assert switched.serving == "2" and switched.previous == "1"
    assert _check_answers(loop, catalog, client) == {"1", "2"}
    assert _top_hit_of_image(service, held_out) == (product_id, "2")
    assert catalog.versions.get("1").state == "ready"  # kept for the rollback window
    info = client.info()
    deadline = time.monotonic() + 10
    while (info.aliases.get("champion"), info.aliases.get("candidate")) != ("2", "1"):
        assert time.monotonic() < deadline, info
        time.sleep(0.2)
        info = client.info()


def _digest(catalog: Catalog, partition: str) -> tuple[Any, ...]:
    with catalog.pool.connection() as conn:
        row = conn.execute(
            f"SELECT count(*), md5(string_agg(embedding::text, '' ORDER BY product_id)),"
            f" max(xmin::text::bigint) FROM {partition}"
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_rollback_right_after_a_switch_serves_the_old_version_within_a_second(
    rollout_settings: Settings, catalog: Catalog, service: SearchService
) -> None:
    assert _serving(catalog) == "2"
    before = _digest(catalog, catalog.versions.get("1").partition)
    started = time.monotonic()
    rollout.rollback(rollout_settings)
    while service.text("navy blue shirt", k=3, mode="vector").model_version != "1":
        pass
    took = time.monotonic() - started
    assert took < 1.0, f"the old version served again after {took:.2f} s"
    assert _digest(catalog, catalog.versions.get("1").partition) == before  # not re-embedded
    assert catalog.versions.get("2").state == "ready"


def test_a_rollout_of_another_dimension_under_search_load(
    rollout_settings: Settings, catalog: Catalog, client: EmbeddingClient, service: SearchService
) -> None:
    assert _serving(catalog) == "1"
    with SearchLoop(service) as loop:
        report = rollout.rollout(rollout_settings, "3", batch_size=8)
    assert report.prepare.dimension == 48 and report.prepare.retired == ["2"]
    assert _check_answers(loop, catalog, client) == {"1", "3"}
    assert catalog.versions.get("2").state == "retired"
    assert catalog.versions.get("1").state == "ready"  # nothing cleared: 64-d still there


def test_a_killed_build_resumes_and_never_switches_before_it_is_complete(
    rollout_settings: Settings, catalog: Catalog, tmp_path: Any
) -> None:
    assert _serving(catalog) == "3"
    rollout.prepare(rollout_settings, "2")  # retired: it starts over
    log = (tmp_path / "rollout.log").open("w")
    build = subprocess.Popen(
        [sys.executable, "-m", "fashion_search.cli", "rollout", "2", "--no-switch",
         "--batch-size", "1"],
        env=child_env(rollout_settings), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while catalog.versions.coverage("2").embedded < 20:
        assert build.poll() is None, (tmp_path / "rollout.log").read_text()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    build.send_signal(signal.SIGKILL)
    build.wait()
    coverage = catalog.versions.coverage("2")
    assert 20 <= coverage.embedded < coverage.products, coverage
    assert catalog.versions.get("2").state == "building"
    with pytest.raises(IncompleteVersionError, match="build it completely"):
        catalog.versions.switch("2", 60)
    assert _serving(catalog) == "3"
    resumed = rollout.build(rollout_settings, "2")
    assert resumed.embedded == coverage.products - coverage.embedded  # only what was left
    assert resumed.coverage_percent == 100.0
    assert rollout.switch(rollout_settings, "2").previous == "3"
    assert _serving(catalog) == "2"


class _WrongVersion:
    """A model-server client that answers with another version, or holds none of them."""

    def __init__(self, client: EmbeddingClient, answer: Exception | str) -> None:
        self.client, self.answer, self.calls = client, answer, 0

    def embed_texts(self, texts: list[str], version: str | None = None) -> Embeddings:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return Embeddings(self.client.embed_texts(texts, version).vectors, self.answer)


@pytest.mark.parametrize(
    "answer",
    ["999", ModelVersionNotLoadedError(grpc.StatusCode.FAILED_PRECONDITION, "not loaded")],
    ids=["another-version", "not-loaded"],
)
def test_a_query_the_serving_version_did_not_embed_is_refused_with_a_503(
    rollout_settings: Settings, catalog: Catalog, client: EmbeddingClient, answer: Any
) -> None:
    wrong = _WrongVersion(client, answer)
    service = SearchService(
        rollout_settings,
        catalog,
        ObjectStore(rollout_settings),
        wrong,  # type: ignore[arg-type]
    )
    with pytest.raises(ServingVersionUnavailableError, match="could not embed") as refused:
        service.text("navy blue shirt", k=3, mode="vector")
    assert wrong.calls == 2  # retried once
    assert status_of(refused.value) == 503
