"""A tiny CLIP end to end: trained on a few hundred products -> registered in the real MLflow
server -> exported to ONNX -> served over gRPC -> embeddings equal PyTorch's; the alias moves
and the server follows; bad input gets clear gRPC errors and the server keeps serving."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient, EmbeddingRequestError
from fashion_search.model.data import load_split
from fashion_search.model.embed import embed_images, embed_texts
from fashion_search.model.factory import Clip, ModelSpec
from fashion_search.model.pipeline import TrainingOutcome, train_and_register
from fashion_search.model.registry import configure_mlflow, load_version
from fashion_search.model.train import TrainConfig
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore
from model_server import loader
from model_server.model import ServedModel
from stack.process import ManagedProcess
from tests.helpers import free_port, jpeg, min_cosine, squares, start_model_server

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
        limit=ROWS, progress=False,
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
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"shirt number {i}" for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: client.embed_texts([t]).vectors[0], texts))
    together = client.embed_texts(texts).vectors
    assert min_cosine(np.stack(results), together) >= 0.9999
    merged = [line for line in server.log_tail(400).splitlines() if "text batch:" in line]
    assert any(int(line.split("from ")[1].split()[0]) > 1 for line in merged), merged[-5:]


def test_alias_move_is_followed_without_failing_requests(
    client: EmbeddingClient, model_settings: Settings, first: TrainingOutcome
) -> None:
    better = TrainConfig(epochs=2, batch_size=64, lr=5e-4, warmup_steps=2, seed=1)
    second = train_and_register(
        model_settings, ModelSpec("fashion-tiny"), better, model_settings.dataset_source,
        limit=ROWS, progress=False,
    )  # fmt: skip
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


def test_a_cached_version_is_served_without_its_checkpoint(
    model_settings: Settings,
    first: TrainingOutcome,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once exported, a version's towers and facts come from the local cache or the models
    bucket; its checkpoint is not downloaded again, and the embeddings stay the same."""
    clip = _reference(model_settings, first)
    titles = ["Turtle Check Men Navy Blue Shirt", "red dress"]
    loader.export_version(model_settings, first.version)  # exported or cached already
    store = ObjectStore(model_settings)
    prefix = loader.onnx_prefix(first.version, "fp32")
    facts = store.get(model_settings.storage.models_bucket, f"{prefix}/{loader.FACTS}")
    assert loader.ModelFacts.model_validate_json(facts) == loader.ModelFacts.of(clip)

    def no_checkpoint(*_: object) -> Clip:
        raise AssertionError("the checkpoint was loaded")

    monkeypatch.setattr(loader, "load_version", no_checkpoint)
    bucket_only = model_settings.replace(top={"cache_dir": tmp_path_factory.mktemp("empty-cache")})
    for settings in (model_settings, bucket_only):  # the local cache; the bucket
        served = ServedModel(loader.export_version(settings, first.version))
        assert (served.dimension, served.image_size) == (clip.embed_dim, clip.image_size)
        assert min_cosine(served.embed_texts(titles), embed_texts(clip, titles)) >= 0.9999
    assert not list(bucket_only.cache_dir.rglob("*.part"))


@pytest.mark.skipif(sys.platform != "linux", reason="glibc and transparent huge pages")
def test_the_server_asks_for_huge_pages(server: ManagedProcess) -> None:
    """The server runs with glibc's huge-page tunable (it re-executes itself with it), and gets
    huge pages where the kernel gives them on request."""
    proc = Path(f"/proc/{server.pid()}")
    environ = dict(
        entry.split("=", 1) for entry in (proc / "environ").read_text().split("\0") if "=" in entry
    )
    assert "glibc.malloc.hugetlb=1" in environ.get("GLIBC_TUNABLES", "")
    if "[never]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text():
        return
    rollup = (proc / "smaps_rollup").read_text().splitlines()
    huge_kb = next(int(line.split()[1]) for line in rollup if line.startswith("AnonHugePages"))
    assert huge_kb > 0
