"""Training the locked-tower model stores every image's embedding. Embedding the catalog by that
version takes them instead of model server runs. They are what the served fp32 towers return,
and an image whose bytes they do not hold still goes through the server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from fashion_search.catalog.precomputed import (
    image_digest,
    load_image_embeddings,
    save_image_embeddings,
)
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.model import DEFAULT_ARCHITECTURE
from fashion_search.model.factory import ModelSpec
from fashion_search.model.pipeline import TrainingOutcome, train_and_register
from fashion_search.model.train import TrainConfig
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore
from fashion_search.workflows.catalog import load_products
from model_server.export import export_version
from stack.process import ManagedProcess
from tests.conftest import catalog_database
from tests.helpers import database, free_port, min_cosine, start_model_server

ROWS = 40


@pytest.fixture(scope="module")
def locked_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A model name, database and model server port of this module's own."""
    port = free_port()
    return settings.replace(
        top={"cache_dir": tmp_path_factory.mktemp("cache")},
        database=database(settings, f"{settings.database.name}_precomputed"),
        registry={"model_name": f"locked-clip-{uuid.uuid4().hex[:6]}"},
        model_server={"port": port, "address": f"127.0.0.1:{port}"},
    )


@pytest.fixture(scope="module")
def trained(locked_settings: Settings) -> TrainingOutcome:
    """The default (locked-tower) architecture trained one epoch on ROWS products."""
    return train_and_register(
        locked_settings, ModelSpec(DEFAULT_ARCHITECTURE),
        TrainConfig(epochs=1, batch_size=16, lr=1e-3, warmup_steps=1),
        locked_settings.dataset_source, export_version, limit=ROWS, progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(
    locked_settings: Settings, trained: TrainingOutcome, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    process = start_model_server(locked_settings, tmp_path_factory.mktemp("model-server"))
    yield process
    process.stop()


def test_the_catalog_takes_the_embeddings_training_stored(
    locked_settings: Settings, store: ObjectStore, trained: TrainingOutcome, server: ManagedProcess
) -> None:
    name, version = trained.version.name, trained.version.version
    items = list(iter_dataset(locked_settings.dataset_source, limit=ROWS))
    images = [item.image for item in items]
    digests = [image_digest(image) for image in images]
    stored = load_image_embeddings(store, name, version)
    assert set(stored) == set(digests)  # both splits

    with EmbeddingClient(locked_settings.model_server.address) as client:
        assert client.info().precision == "fp32"
        served = client.embed_images(images).vectors
    assert min_cosine(np.stack([stored[d] for d in digests]), served) >= 0.9999

    # Stored vectors no server gives (negated), and none for the first five images: the
    # catalog's embedding, and a load's, take the former and ask the server for the latter.
    missing = set(digests[:5])
    kept = [d for d in stored if d not in missing]
    save_image_embeddings(store, name, version, kept, -np.stack([stored[d] for d in kept]))
    for embedded in (_embedded_catalog(locked_settings, version), _loaded(locked_settings)):
        assert sorted(embedded) == sorted(item.fields.id for item in items)
        for item, digest, vector in zip(items, digests, served, strict=True):
            expected = vector if digest in missing else -vector
            assert min_cosine(embedded[item.fields.id][None], expected[None]) >= 0.9999
    # Not reused when the settings say so: every image through the server.
    off = locked_settings.replace(registry={"reuse_training_embeddings": False})
    embedded = _embedded_catalog(off, version)
    ids = [item.fields.id for item in items]
    assert min_cosine(np.stack([embedded[i] for i in ids]), served) >= 0.9999


def _embeddings(settings: Settings, version: str) -> dict[int, np.ndarray]:
    with psycopg.connect(settings.database.url) as conn:
        register_vector(conn)
        rows = conn.execute(
            "SELECT product_id, embedding FROM product_embeddings WHERE model_version = %s",
            (version,),
        ).fetchall()
    return {product_id: vector.to_numpy() for product_id, vector in rows}


def _embedded_catalog(settings: Settings, version: str) -> dict[int, np.ndarray]:
    """The embeddings of a catalog loaded, then embedded (:func:`embed_catalog`)."""
    with catalog_database(settings, ROWS):
        return _embeddings(settings, version)


def _loaded(settings: Settings) -> dict[int, np.ndarray]:
    """The embeddings of a catalog embedded as it loads (the ``recreate_prod_database`` way)."""
    with catalog_database(settings, 0):
        loaded = load_products(settings, settings.dataset_source, ROWS)
        assert loaded.embedded == ROWS and not loaded.embed_failed
        return _embeddings(settings, loaded.model_version or "")
