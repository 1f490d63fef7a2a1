"""A tiny CLIP end to end: trained on a few hundred products -> registered in the real MLflow
server and exported to ONNX in its run -> served over gRPC -> embeddings equal PyTorch's; the
alias moves and the server follows; a candidate is served beside the champion, chosen per
request, re-labelled when the aliases swap, unloaded when its alias goes, and a request never
mixes versions; bad input gets clear gRPC errors and the server keeps serving. Serving a
version from its export imports no torch; one without an export is refused where torch is
missing and exported where it is there; fetched files are checked, and a version whose export
was tampered with in the models bucket is refused while the previous one serves on."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np
import pytest

from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import (
    EmbeddingClient,
    EmbeddingRequestError,
    ModelServerUnavailableError,
    ModelVersionNotLoadedError,
    channel_target,
)
from fashion_search.model.data import load_split
from fashion_search.model.embed import embed_images, embed_texts
from fashion_search.model.factory import Clip, ModelSpec, create_clip
from fashion_search.model.pipeline import TrainingOutcome, train_and_register
from fashion_search.model.registry import configure_mlflow, load_version, register_clip
from fashion_search.model.train import TrainConfig
from fashion_search.settings import REPO_ROOT, Settings
from fashion_search.storage import ObjectStore
from model_server import commands, export, loader
from model_server.artifacts import (
    ARTIFACT_DIR,
    EXPORT_FILES,
    EXPORT_REVISION,
    MANIFEST,
    MANIFEST_SHA256_TAG,
    TOKENIZER,
    VARIANTS,
    ModelFacts,
)
from model_server.model import ServedModel
from stack.process import ManagedProcess
from tests.helpers import child_env, free_port, jpeg, min_cosine, squares, start_model_server

ROWS = 300
INVALID = grpc.StatusCode.INVALID_ARGUMENT
TINY = TrainConfig(epochs=1, batch_size=64, lr=5e-4, warmup_steps=2)


@pytest.fixture(scope="module")
def model_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for a model registered under a fresh name, served on a free port."""
    port = free_port()
    return settings.replace(
        top={"cache_dir": tmp_path_factory.mktemp("cache")},
        registry={"model_name": f"test-clip-{uuid.uuid4().hex[:6]}"},
        model_server={"port": port, "address": f"127.0.0.1:{port}", "reload_interval_s": 0.5},
    )


@pytest.fixture(scope="module")
def first(model_settings: Settings) -> TrainingOutcome:
    """Version 1: a tiny CLIP trained one epoch, registered and promoted (no champion yet)."""
    return train_and_register(
        model_settings, ModelSpec("fashion-tiny"), TINY, model_settings.dataset_source,
        export.export_version, limit=ROWS, progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def second(model_settings: Settings, first: TrainingOutcome) -> TrainingOutcome:
    """Version 2: two epochs from another seed, so its embeddings are unlike version 1's."""
    better = TrainConfig(epochs=2, batch_size=64, lr=5e-4, warmup_steps=2, seed=1)
    return train_and_register(
        model_settings, ModelSpec("fashion-tiny"), better, model_settings.dataset_source,
        export.export_version, limit=ROWS, progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(
    model_settings: Settings, first: TrainingOutcome, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """``python -m model_server`` as a real process, stopped after the module."""
    process = start_model_server(model_settings, tmp_path_factory.mktemp("model-server"))
    yield process
    process.stop()


@pytest.fixture
def client(model_settings: Settings, server: ManagedProcess) -> Iterator[EmbeddingClient]:
    with EmbeddingClient(model_settings.model_server.address) as c:
        yield c


def _reference(settings: Settings, outcome: TrainingOutcome) -> Clip:
    configure_mlflow(settings)
    return load_version(outcome.version)


def test_training_registers_and_promotes(first: TrainingOutcome) -> None:
    assert first.promoted
    assert first.champion_metrics is None
    for name in ("title_r1", "title_r10", "title_mrr", "attr_p10_seen", "attr_p10_unseen",
                 "knn_master_category", "knn_article_type", "knn_base_colour"):  # fmt: skip
        assert 0.0 <= first.metrics[name] <= 1.0, name


def test_served_embeddings_equal_pytorch(
    client: EmbeddingClient, model_settings: Settings, first: TrainingOutcome
) -> None:
    info = client.info()
    assert (info.registry_name, info.registry_version) == (
        model_settings.registry.model_name,
        first.version.version,
    )
    assert info.dimension == 64
    assert "CPUExecutionProvider" in info.execution_providers
    clip = _reference(model_settings, first)
    test = load_split(model_settings.dataset_source, clip.image_size, "test", limit=ROWS)
    # 40 of each: more than the batch size (32), so each request runs in two chunks
    titles = [f.product_display_name for f in test.fields[:40]]
    served = client.embed_texts(titles)
    assert served.model_version == first.version.version
    assert min_cosine(served.vectors, embed_texts(clip, titles)) >= 0.9999
    raw = [item.image for item in iter_dataset(model_settings.dataset_source, limit=40)]
    served_images = client.embed_images(raw).vectors
    reference = embed_images(clip, squares(raw, clip.image_size))
    assert min_cosine(served_images, reference) >= 0.9999


@pytest.mark.parametrize(
    ("call", "payload", "code", "message"),
    [
        ("texts", lambda: [], INVALID, "texts is empty"),
        ("texts", lambda: [""], INVALID, "text 0 is empty"),
        ("texts", lambda: ["ok", "x" * 10_000], INVALID, "text 1 has 10000"),
        ("texts", lambda: ["shirt"] * 10_000, INVALID, "10000 texts"),
        ("images", lambda: [], INVALID, "images is empty"),
        ("images", lambda: [jpeg(60, 80)[:300]], INVALID, "not a decodable"),
        ("images", lambda: [b"%PDF-1.7 not an image"], INVALID, "not a decodable"),
        ("images", lambda: [jpeg(8660, 5774)], grpc.StatusCode.RESOURCE_EXHAUSTED, "pixels"),
    ],
    ids=[
        "no-texts",
        "empty-text",
        "10k-chars",
        "10k-texts",
        "no-images",
        "corrupt-jpeg",
        "not-an-image",
        "50-megapixels",
    ],
)
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(
    client: EmbeddingClient,
    call: str,
    payload: Callable[[], list[Any]],
    code: grpc.StatusCode,
    message: str,
) -> None:
    method = client.embed_texts if call == "texts" else client.embed_images
    with pytest.raises(EmbeddingRequestError, match=message) as error:
        method(payload())
    assert error.value.code == code
    assert client.healthy()
    assert client.embed_texts(["navy blue shirt"]).vectors.shape == (1, 64)


def test_concurrent_requests_are_batched(client: EmbeddingClient, server: ManagedProcess) -> None:
    texts = [f"shirt number {i}" for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: client.embed_texts([t]).vectors[0], texts))
    together = client.embed_texts(texts).vectors
    assert min_cosine(np.stack(results), together) >= 0.9999
    merged = [line for line in server.log_tail(400).splitlines() if "text batch:" in line]
    assert any(int(line.split("from ")[1].split()[0]) > 1 for line in merged), merged[-5:]


def test_calls_balance_over_replicas_and_none_fails_when_one_is_killed(
    model_settings: Settings, first: TrainingOutcome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two model servers behind one client address: both take calls (round robin); one killed
    (SIGKILL) under load at concurrency 4, the calls go on on the other without a failure."""
    replicas = []
    try:
        for name in ("a", "b"):
            port = free_port()
            mine = model_settings.replace(
                model_server={"port": port, "address": f"127.0.0.1:{port}"}
            )
            run_dir = tmp_path_factory.mktemp(f"replica-{name}")
            replicas.append((mine.model_server.address, start_model_server(mine, run_dir)))
        address = ",".join(a for a, _ in replicas)
        done: list[int] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def load() -> None:
            with EmbeddingClient(address, timeout_s=10) as client:
                while not stop.is_set():
                    try:
                        client.embed_texts([f"navy shirt {len(done)}"])
                        done.append(1)
                    except Exception as error:  # every failure counts
                        failures.append(error)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(3)
        logs = [server.log_tail(2000) for _, server in replicas]
        assert all("text batch:" in log for log in logs)  # both took calls
        before = len(done)
        replicas[0][1].stop(signal.SIGKILL)
        time.sleep(4)
        stop.set()
        for thread in threads:
            thread.join()
        assert not failures, failures[:3]
        assert len(done) - before >= 20  # the calls went on
        with (  # the killed one alone answers nothing: the balancing kept the calls going
            EmbeddingClient(replicas[0][0], timeout_s=2) as alone,
            pytest.raises(ModelServerUnavailableError),
        ):
            alone.embed_texts(["navy shirt"])
    finally:
        for _, server in replicas:
            server.stop()


def test_several_addresses_are_one_grpc_target() -> None:
    assert channel_target("127.0.0.1:50051") == "127.0.0.1:50051"
    assert channel_target("dns:///model-server:50051") == "dns:///model-server:50051"
    assert channel_target("10.0.0.5:1, 10.0.0.6:2") == "ipv4:10.0.0.5:1,10.0.0.6:2"
    assert channel_target("[::1]:1,[::2]:2") == "ipv6:[::1]:1,[::2]:2"
    for bad in ("model-a:1,model-b:1", "10.0.0.5:1,[::1]:2"):
        with pytest.raises(ValueError, match="model server"):
            channel_target(bad)


def test_alias_move_is_followed_without_failing_requests(
    client: EmbeddingClient, model_settings: Settings, second: TrainingOutcome
) -> None:
    mlflow_client = configure_mlflow(model_settings)
    mlflow_client.set_registered_model_alias(
        model_settings.registry.model_name, "champion", second.version.version
    )
    deadline = time.monotonic() + 60
    while client.info().registry_version != second.version.version:
        assert client.embed_texts(["still serving"]).vectors.shape == (1, 64)
        assert time.monotonic() < deadline, "the server never loaded the new version"
        time.sleep(0.2)
    served = client.embed_texts(["Turtle Check Men Navy Blue Shirt"])
    assert served.model_version == second.version.version
    reference = embed_texts(
        _reference(model_settings, second), ["Turtle Check Men Navy Blue Shirt"]
    )
    assert min_cosine(served.vectors, reference) >= 0.9999


@dataclass(frozen=True)
class _Reference:
    """PyTorch's embeddings of :data:`TITLES` and of the images, by one version."""

    texts: np.ndarray
    images: np.ndarray


TITLES = ["Turtle Check Men Navy Blue Shirt", "red dress", "black leather belt"]


@pytest.fixture(scope="module")
def images(model_settings: Settings) -> list[bytes]:
    """64 encoded product images."""
    return [item.image for item in iter_dataset(model_settings.dataset_source, limit=64)]


@pytest.fixture(scope="module")
def references(
    model_settings: Settings, first: TrainingOutcome, second: TrainingOutcome, images: list[bytes]
) -> dict[str, _Reference]:
    """PyTorch's embeddings by versions 1 and 2, which differ on every image."""
    found = {}
    for outcome in (first, second):
        clip = _reference(model_settings, outcome)
        found[outcome.version.version] = _Reference(
            embed_texts(clip, TITLES), embed_images(clip, squares(images, clip.image_size))
        )
    one, two = found.values()
    cosines = np.sum(one.images * two.images, 1)
    cosines /= np.linalg.norm(one.images, axis=1) * np.linalg.norm(two.images, axis=1)
    assert float(cosines.max()) < 0.99, "the versions embed some image alike"
    return found


def _set_aliases(settings: Settings, aliases: dict[str, str | None]) -> None:
    """Point the registry aliases at versions (None: remove the alias)."""
    client, name = configure_mlflow(settings), settings.registry.model_name
    for alias, version in aliases.items():
        if version is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, version)


def _wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> float:
    """Seconds until ``condition()`` holds, polled every 50 ms."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, what
        time.sleep(0.05)
    return time.monotonic() - started


def _serving(client: EmbeddingClient, settings: Settings, champion: str, candidate: str) -> bool:
    """Whether the server holds exactly these two versions under these aliases."""
    info, registry = client.info(), settings.registry
    return (
        info.registry_version == champion
        and info.aliases == {registry.model_alias: champion, registry.candidate_alias: candidate}
        and info.versions == {champion: 64, candidate: 64}
    )


def _log_since(server: ManagedProcess, offset: int) -> str:
    with server.log_file.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def test_a_candidate_is_served_beside_the_champion_and_chosen_per_request(
    client: EmbeddingClient,
    model_settings: Settings,
    first: TrainingOutcome,
    second: TrainingOutcome,
    images: list[bytes],
    references: dict[str, _Reference],
) -> None:
    one, two = first.version.version, second.version.version
    registry = model_settings.registry
    _set_aliases(model_settings, {registry.model_alias: two, registry.candidate_alias: one})
    _wait_until(lambda: _serving(client, model_settings, two, one), "the candidate never loaded")
    for version in (one, two):
        texts = client.embed_texts(TITLES, version=version)
        assert texts.model_version == version
        assert min_cosine(texts.vectors, references[version].texts) >= 0.9999
        served = client.embed_images(images, version=version)
        assert served.model_version == version
        assert min_cosine(served.vectors, references[version].images) >= 0.9999
    default = client.embed_images(images[:5])
    assert default.model_version == two
    assert min_cosine(default.vectors, references[two].images[:5]) >= 0.9999
    message = (
        f"model version 999 is not loaded here (loaded: {two} as champion, {one} as candidate)"
    )
    for call in (
        lambda: client.embed_texts(TITLES, "999"),
        lambda: client.embed_images(images[:1], "999"),
    ):
        with pytest.raises(ModelVersionNotLoadedError, match=re.escape(message)) as error:
            call()
        assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert client.healthy()
    assert client.embed_texts(TITLES).model_version == two


def test_swapping_champion_and_candidate_relabels_without_loading(
    client: EmbeddingClient,
    server: ManagedProcess,
    model_settings: Settings,
    first: TrainingOutcome,
    second: TrainingOutcome,
    references: dict[str, _Reference],
) -> None:
    one, two = first.version.version, second.version.version
    registry = model_settings.registry
    _set_aliases(model_settings, {registry.model_alias: two, registry.candidate_alias: one})
    _wait_until(lambda: _serving(client, model_settings, two, one), "both versions never loaded")
    offset = server.log_file.stat().st_size
    _set_aliases(model_settings, {registry.model_alias: one, registry.candidate_alias: two})
    interval = model_settings.model_server.reload_interval_s
    took = _wait_until(lambda: _serving(client, model_settings, one, two), "no swap", 10 * interval)
    assert took < 6 * interval
    log = _log_since(server, offset)
    assert f"now serving {one} as champion, {two} as candidate" in log
    assert "loading" not in log and "unloaded" not in log, log[-2000:]
    served = client.embed_texts(TITLES)
    assert served.model_version == one
    assert min_cosine(served.vectors, references[one].texts) >= 0.9999


def test_image_batches_in_flight_while_the_champion_flips_get_one_version_each(
    client: EmbeddingClient,
    server: ManagedProcess,
    model_settings: Settings,
    first: TrainingOutcome,
    second: TrainingOutcome,
    images: list[bytes],
    references: dict[str, _Reference],
) -> None:
    """8 threads send requests of 4-16 images (no version) while the champion alias flips
    between the versions (to one loaded as candidate, back to one unloaded meanwhile or not):
    every image of a response is embedded by the version that the response names."""
    one, two = first.version.version, second.version.version
    registry = model_settings.registry
    _set_aliases(model_settings, {registry.model_alias: one, registry.candidate_alias: two})
    _wait_until(lambda: _serving(client, model_settings, one, two), "both versions never loaded")
    offset = server.log_file.stat().st_size
    flipped = threading.Event()
    counts: dict[str, int] = {one: 0, two: 0}
    wrong: list[str] = []
    lock = threading.Lock()

    def send(worker: int) -> None:
        rng = np.random.default_rng(worker)
        sent = 0
        while not flipped.is_set() or sent < 40:
            picked = rng.choice(len(images), int(rng.integers(4, 17)), replace=False)
            served = client.embed_images([images[i] for i in picked])
            reference = references.get(served.model_version)
            cosine = (
                -1.0 if reference is None else min_cosine(served.vectors, reference.images[picked])
            )
            with lock:
                counts[served.model_version] = counts.get(served.model_version, 0) + 1
                if cosine < 0.9999:
                    wrong.append(
                        f"{served.model_version}: min cosine {cosine:.4f} over {len(picked)}"
                    )
            sent += 1

    with ThreadPoolExecutor(8) as pool:
        senders = [pool.submit(send, worker) for worker in range(8)]
        rng = np.random.default_rng(0)
        try:
            for flip in range(6):
                target = two if flip % 2 == 0 else one
                _set_aliases(model_settings, {registry.model_alias: target})
                _wait_until(lambda: client.info().registry_version == target, "no flip")  # noqa: B023
                if flip == 2:  # the version flipped from is unloaded, and loaded at the next flip
                    _wait_until(lambda: client.info().versions == {target: 64}, "kept")  # noqa: B023
                time.sleep(float(rng.uniform(0.2, 1.5)))
        finally:
            flipped.set()
        for sender in senders:
            sender.result()
    assert not wrong, f"{len(wrong)} of {sum(counts.values())} responses mixed: {wrong[:5]}"
    assert counts[one] > 0 and counts[two] > 0, counts
    assert sum(counts.values()) >= 320, counts
    assert "loading" in _log_since(server, offset)  # a flip back found the version unloaded


def test_removing_the_candidate_alias_unloads_it(
    client: EmbeddingClient,
    server: ManagedProcess,
    model_settings: Settings,
    first: TrainingOutcome,
    second: TrainingOutcome,
) -> None:
    one, two = first.version.version, second.version.version
    registry = model_settings.registry
    _set_aliases(model_settings, {registry.model_alias: two, registry.candidate_alias: one})
    _wait_until(lambda: _serving(client, model_settings, two, one), "both versions never loaded")
    assert client.embed_texts(TITLES, version=one).model_version == one
    offset = server.log_file.stat().st_size
    _set_aliases(model_settings, {registry.candidate_alias: None})

    refused: list[str] = []

    def unloaded() -> bool:
        try:
            client.embed_texts(TITLES, version=one)
        except ModelVersionNotLoadedError as error:
            refused.append(str(error))
            return True
        return False

    _wait_until(unloaded, "the candidate stayed loaded", 30)
    assert refused == [f"model version {one} is not loaded here (loaded: {two} as champion)"]
    info = client.info()
    assert (info.registry_version, info.aliases, info.versions) == (
        two,
        {registry.model_alias: two},
        {two: 64},
    )
    assert f"version {one} is named by no alias: unloaded" in _log_since(server, offset)
    assert client.embed_texts(TITLES).model_version == two


def _artifact_key(settings: Settings, run_id: str, path: str) -> str:
    """The models bucket's key of a run artifact (the MLflow server keeps them under
    ``mlflow/``: ``--artifacts-destination``)."""
    uri = urlsplit(configure_mlflow(settings).get_run(run_id).info.artifact_uri)
    assert uri.scheme == "mlflow-artifacts", uri
    return f"mlflow/{uri.path.strip('/')}/{path}"


def test_a_tampered_export_is_refused_and_the_previous_version_serves_on(
    client: EmbeddingClient,
    server: ManagedProcess,
    model_settings: Settings,
    stack_settings: Settings,
    second: TrainingOutcome,
    images: list[bytes],
    references: dict[str, _Reference],
    tmp_path: Path,
) -> None:
    """Whoever can write the models bucket (not the registry) replaces a new version's
    ``fp32/image.onnx`` and its ``model.json``, consistent with each other: the champion alias
    moves to it, the server refuses it (its model.json is not the one the registry recorded at
    export) and serves the previous version on."""
    registry = model_settings.registry
    two = second.version.version
    _set_aliases(model_settings, {registry.model_alias: two})
    if registry.candidate_alias in _registered_aliases(model_settings):
        _set_aliases(model_settings, {registry.candidate_alias: None})
    _wait_until(lambda: client.info().versions == {two: 64}, "not serving version 2 alone")

    mlflow_client = configure_mlflow(model_settings)
    run = mlflow_client.create_run(mlflow_client.get_experiment_by_name("Default").experiment_id)
    run_id = run.info.run_id
    version = register_clip(
        mlflow_client, create_clip(ModelSpec("fashion-tiny")), run_id, registry.model_name,
        "split", {"title_mrr": 0.0},
    )  # fmt: skip
    mlflow_client.set_terminated(run_id)
    export.export_version(model_settings, mlflow_client, version)
    recorded = loader.recorded_manifest_sha256(mlflow_client, version)
    assert recorded is not None
    try:
        # The attacker's tower (a valid one: version 2's) and a model.json that names it.
        tower = Path(
            mlflow_client.download_artifacts(
                second.version.run_id, f"{ARTIFACT_DIR}/fp32/image.onnx", str(tmp_path)
            )
        ).read_bytes()
        original = Path(
            mlflow_client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{MANIFEST}", str(tmp_path))
        ).read_bytes()
        assert hashlib.sha256(original).hexdigest() == recorded
        manifest = json.loads(original)
        manifest["sha256"]["fp32/image.onnx"] = hashlib.sha256(tower).hexdigest()
        forged = json.dumps(manifest, indent=2).encode()
        s3 = ObjectStore(stack_settings).client
        bucket = stack_settings.storage.models_bucket
        for name, data in (("fp32/image.onnx", tower), (MANIFEST, forged)):
            key = _artifact_key(model_settings, run_id, f"{ARTIFACT_DIR}/{name}")
            s3.head_object(Bucket=bucket, Key=key)  # the export's object: overwritten
            s3.put_object(Bucket=bucket, Key=key, Body=data)
        with pytest.raises(loader.ExportIntegrityError, match="integrity check failed"):
            loader.fetch_version(
                model_settings.replace(top={"cache_dir": tmp_path / "cache"}), mlflow_client,
                version,
            )  # fmt: skip

        offset = server.log_file.stat().st_size
        _set_aliases(model_settings, {registry.model_alias: version.version})
        _wait_until(
            lambda: f"loading version {version.version} failed" in _log_since(server, offset),
            "the server never tried the tampered version",
        )
        time.sleep(3 * model_settings.model_server.reload_interval_s)  # more polls: still so
        log = _log_since(server, offset)
        assert "ExportIntegrityError" in log and "integrity check failed" in log, log[-3000:]
        assert MANIFEST_SHA256_TAG in log
        info = client.info()
        assert (info.registry_version, info.versions) == (two, {two: 64})
        served = client.embed_images(images)
        assert served.model_version == two
        assert min_cosine(served.vectors, references[two].images) >= 0.9999
        texts = client.embed_texts(TITLES)
        assert texts.model_version == two
        assert min_cosine(texts.vectors, references[two].texts) >= 0.9999
    finally:
        _set_aliases(model_settings, {registry.model_alias: two})


def _registered_aliases(settings: Settings) -> set[str]:
    found = configure_mlflow(settings).get_registered_model(settings.registry.model_name)
    return set(found.aliases)


def test_a_registered_version_has_its_export_in_its_run(
    model_settings: Settings, first: TrainingOutcome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train_and_register exported the version: every file under onnx/r{revision}/ of its run,
    model.json with the facts; a warm cache fetches nothing but model.json."""
    client = configure_mlflow(model_settings)
    run_id = first.version.run_id
    assert run_id is not None
    listed = {
        a.path
        for folder in (ARTIFACT_DIR, *(f"{ARTIFACT_DIR}/{v}" for v in VARIANTS))
        for a in client.list_artifacts(run_id, folder)
        if not a.is_dir
    }
    assert listed == {f"{ARTIFACT_DIR}/{name}" for name in (*EXPORT_FILES, MANIFEST)}
    manifest = loader.remote_manifest(client, first.version)
    assert manifest is not None
    assert ModelFacts.model_validate(manifest.model_dump()) == ModelFacts.of(
        _reference(model_settings, first)
    )
    assert set(manifest.sha256) == set(EXPORT_FILES)
    loader.fetch_version(model_settings, client, first.version)  # cached now, if not before
    downloads: list[str] = []
    real = client.download_artifacts
    monkeypatch.setattr(client, "download_artifacts", lambda *a: downloads.append(a[1]) or real(*a))
    exported = loader.fetch_version(model_settings, client, first.version)
    assert downloads == [f"{ARTIFACT_DIR}/{MANIFEST}"]
    assert exported.facts == manifest


def test_export_is_idempotent(
    model_settings: Settings, first: TrainingOutcome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version with an export of this revision is left alone: no checkpoint, no upload."""
    client = configure_mlflow(model_settings)
    before = loader.remote_manifest(client, first.version)
    uploads: list[Any] = []
    for method in ("log_artifact", "log_artifacts"):
        monkeypatch.setattr(client, method, lambda *a, **k: uploads.append(a))

    def no_checkpoint(*_: object) -> Clip:
        raise AssertionError("the checkpoint was loaded")

    monkeypatch.setattr(export, "load_version", no_checkpoint)
    assert export.export_version(model_settings, client, first.version) == before
    assert uploads == []


def test_the_export_command(
    model_settings: Settings,
    first: TrainingOutcome,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(commands, "get_settings", lambda: model_settings)
    assert commands.main(["export", "--version", first.version.version]) == 0
    name, version = model_settings.registry.model_name, first.version.version
    assert capsys.readouterr().out.strip() == (
        f"{name} version {version}: ONNX export revision {EXPORT_REVISION} in {ARTIFACT_DIR}/"
        f" of run {first.version.run_id}"
    )
    assert commands.main(["export", "--version", "999"]) == 2
    assert f"{name!r} has no version 999" in capsys.readouterr().err


#: Serves the champion from its export in a fresh interpreter (texts: argv[1] as JSON; an image:
#: the file argv[2]) and reports which of the export's modules came in.
SERVE_WITHOUT_TORCH = """
import json, sys
from pathlib import Path
from fashion_search.settings import Settings
from model_server.service import load_model
model = load_model(Settings())
texts = model.embed_texts(json.loads(sys.argv[1]))
images = model.embed_pixels([model.preprocess(Path(sys.argv[2]).read_bytes(), 1_000_000)])
export_modules = {"torch", "open_clip", "onnx", "onnxscript"}
print(json.dumps({
    "version": model.version.version, "texts": texts.tolist(), "images": images.tolist(),
    "imported": sorted(export_modules & {name.split(".")[0] for name in sys.modules}),
}))
"""


def test_a_version_with_its_export_is_served_without_torch(
    model_settings: Settings, first: TrainingOutcome, tmp_path: Path
) -> None:
    """From an empty cache: model.json, tokenizer and towers come from the MLflow artifacts,
    and a text and an image are embedded as PyTorch does, with no torch or open_clip."""
    settings = model_settings.replace(top={"cache_dir": tmp_path / "cache"})
    version = loader.resolve(settings, configure_mlflow(settings))
    titles = ["Turtle Check Men Navy Blue Shirt", "red dress"]
    image = next(iter(iter_dataset(settings.dataset_source, limit=1))).image
    (tmp_path / "product.jpg").write_bytes(image)
    done = _python(SERVE_WITHOUT_TORCH, settings, json.dumps(titles), str(tmp_path / "product.jpg"))
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.splitlines()[-1])
    assert served["imported"] == []
    assert served["version"] == version.version
    clip = load_version(version)
    assert min_cosine(np.array(served["texts"]), embed_texts(clip, titles)) >= 0.9999
    reference = embed_images(clip, squares([image], clip.image_size))
    assert min_cosine(np.array(served["images"]), reference) >= 0.9999
    cached = sorted(
        p.relative_to(loader.cache_folder(settings, version)).as_posix()
        for p in settings.cache_dir.rglob("*")
        if p.is_file()
    )
    assert cached == sorted([MANIFEST, TOKENIZER, "fp32/image.onnx", "fp32/text.onnx"])


def test_a_corrupt_file_is_fetched_again_and_a_bad_download_is_not_kept(
    model_settings: Settings,
    first: TrainingOutcome,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = model_settings.replace(top={"cache_dir": tmp_path})
    client = configure_mlflow(settings)
    text = loader.fetch_version(settings, client, first.version).files["text"]
    good = text.read_bytes()
    text.write_bytes(good[:-8] + b"corrupt!")  # same size, other bytes
    again = loader.fetch_version(settings, client, first.version)
    assert again.files["text"].read_bytes() == good
    titles = ["Turtle Check Men Navy Blue Shirt"]
    reference = embed_texts(_reference(settings, first), titles)
    assert min_cosine(ServedModel(again).embed_texts(titles), reference) >= 0.9999

    real = client.download_artifacts

    def corrupt_towers(run_id: str, path: str, dst: str) -> str:
        fetched = Path(real(run_id, path, dst))
        if path.endswith("text.onnx"):
            fetched.write_bytes(fetched.read_bytes() + b"\0")
        return str(fetched)

    monkeypatch.setattr(client, "download_artifacts", corrupt_towers)
    text.unlink()
    with pytest.raises(loader.ExportIntegrityError, match=r"text\.onnx .* not kept"):
        loader.fetch_version(settings, client, first.version)
    assert not text.exists()
    assert [p.name for p in text.parent.iterdir()] == ["image.onnx"]
    assert not list(tmp_path.rglob(".fetch-*"))


#: Fetches the champion's export with torch unimportable (``import torch`` fails).
FETCH_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None
from fashion_search.model.registry import configure_mlflow
from fashion_search.settings import Settings
from model_server.loader import ExportMissingError, fetch_version, resolve
settings = Settings()
client = configure_mlflow(settings)
try:
    fetch_version(settings, client, resolve(settings, client))
except ExportMissingError as error:
    print(f"refused: {error}")
else:
    print("served")
"""


def test_a_version_without_its_export_is_refused_without_torch_and_exported_with_it(
    model_settings: Settings, tmp_path: Path
) -> None:
    """Registered without an export: where torch cannot be imported the loader says how to
    export it and exports nothing; where it can, the loader exports it and serves it."""
    settings = model_settings.replace(
        top={"cache_dir": tmp_path},
        registry={"model_name": f"{model_settings.registry.model_name}-bare"},
    )
    client = configure_mlflow(settings)
    clip = create_clip(ModelSpec("fashion-tiny"))
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    version = register_clip(
        client, clip, run.info.run_id, settings.registry.model_name, "split", {"title_mrr": 0.1}
    )
    client.set_terminated(run.info.run_id)
    client.set_registered_model_alias(version.name, "champion", version.version)
    assert loader.remote_manifest(client, version) is None

    done = _python(FETCH_WITHOUT_TORCH, settings)
    assert done.returncode == 0, done.stderr[-3000:]
    message = done.stdout.strip()
    assert message.startswith(f"refused: version {version.version} of {version.name!r}"), message
    assert f"python -m model_server export --version {version.version}" in message
    assert "no torch" in message
    assert loader.remote_manifest(client, version) is None
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]

    exported = loader.fetch_version(settings, client, version)  # torch here: exported now
    assert loader.remote_manifest(client, version) == exported.facts
    titles = ["Turtle Check Men Navy Blue Shirt", "red dress"]
    assert (
        min_cosine(ServedModel(exported).embed_texts(titles), embed_texts(clip, titles)) >= 0.9999
    )


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/PID/maps")
def test_the_server_process_loads_no_torch(server: ManagedProcess) -> None:
    maps = Path(f"/proc/{server.pid()}/maps").read_text()
    assert "libtorch" not in maps


def _python(script: str, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c script args`` with ``settings`` in its environment."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=child_env(settings), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def test_an_overload_is_refused_at_once_and_the_api_answers_503_with_retry_after(
    model_settings: Settings, first: TrainingOutcome, tmp_path: Path
) -> None:
    """A server holding one call at a time: concurrent calls beyond it are answered
    RESOURCE_EXHAUSTED at once (ModelServerOverloadedError, never a timeout), the others
    succeed, and the server serves on; the API turns the refusal into 503 with Retry-After."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from fashion_search.embedding_client import ModelServerOverloadedError
    from functions.api.errors import install_error_handlers

    port = free_port()
    narrow = model_settings.replace(
        model_server={"port": port, "address": f"127.0.0.1:{port}", "max_concurrent_rpcs": 1}
    )
    process = start_model_server(narrow, tmp_path)
    images = [jpeg(64, 64, colour) for colour in ("navy", "red", "white", "black")] * 16

    def call(_: int) -> tuple[str, float]:
        started = time.monotonic()
        try:
            embedder.embed_images(images)
        except ModelServerOverloadedError:
            return "refused", time.monotonic() - started
        return "served", time.monotonic() - started

    try:
        with EmbeddingClient(narrow.model_server.address) as embedder:
            with ThreadPoolExecutor(16) as pool:
                outcomes = list(pool.map(call, range(64)))
            assert embedder.embed_texts(["navy blue shirt"]).vectors.shape == (1, 64)
    finally:
        process.stop()
    refused = [took for outcome, took in outcomes if outcome == "refused"]
    assert refused and len(refused) < len(outcomes), outcomes
    assert max(refused) < 1.0  # at once, not after a timeout

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/overloaded")
    def overloaded() -> None:
        raise ModelServerOverloadedError("model server: too many calls at once")

    response = TestClient(app).get("/overloaded")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "too many calls" in response.json()["detail"]
