"""``recreate_prod_database``: (re)create the catalog schema, load the dataset (images to the
object store, embedded through the model server from the bytes in hand, rows bulk-inserted
with their embeddings), then embed whatever is still without an embedding from the served
version.

Every step can run again after a failure: loading skips products already stored, embedding
takes only products without an embedding from the served version.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.embed import EmbedSummary, embed_catalog, with_embeddings
from fashion_search.catalog.load import load_catalog
from fashion_search.catalog.migrate import (
    drop_vector_index,
    ensure_vector_index,
    migrate,
    set_embedding_dimension,
)
from fashion_search.catalog.models import Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import EmbeddingClient, ModelServerUnavailableError
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore


def create_schema(settings: Settings, reset: bool = False) -> dict[str, Any]:
    """Apply the migrations (``reset`` first drops the catalog: products and migrations), and
    build the HNSW index if a killed bulk load left it dropped."""
    if reset:
        with psycopg.connect(settings.database.url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS products, schema_migrations")
    applied = migrate(settings.database.url, settings.database.embedding_dim)
    ensure_vector_index(settings.database.url)
    return {"reset": reset, "applied": applied}


def load_products(settings: Settings, source: str, limit: int | None = None) -> dict[str, Any]:
    """Load ``source`` (first ``limit`` rows); products already stored are left as they are.

    Each batch is embedded from the images in hand before its rows are written (one pass: no
    image is read back from the store, no row written twice). An unreachable model server
    stops the embedding, not the load; :func:`embed_products` embeds what is left either way.
    Into an empty catalog the rows go without the HNSW index, which is built once at the end
    (also when the load fails).
    """
    store = ObjectStore(settings)
    store.ensure_buckets()
    started = time.perf_counter()
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        catalog = Catalog.of(pool)
        embedder = _LoadEmbedder(settings, client)
        bulk = catalog.products.count() == 0
        try:
            if bulk:
                drop_vector_index(settings.database.url)
            summary = load_catalog(
                catalog, store, source,
                limit=limit, skip_existing=True, progress=False, embed=embedder,
            )  # fmt: skip
        finally:
            ensure_vector_index(settings.database.url)
    return {
        "loaded": summary.loaded,
        "skipped": summary.skipped,
        "rejected": len(summary.report.rejected),
        "bulk": bulk,
        "embedded": embedder.summary.embedded,
        "embed_failed": len(embedder.summary.failed),
        "embed_stopped": embedder.stopped,
        "seconds": round(time.perf_counter() - started, 1),
    }


class _LoadEmbedder:
    """A load's ``embed``: the catalog moves to the served model's dimension first; at the first
    sign of an unreachable model server it stops embedding and says why in ``stopped``."""

    def __init__(self, settings: Settings, client: EmbeddingClient) -> None:
        self.client = client
        self.summary = EmbedSummary("")
        self.stopped: str | None = None
        try:
            dimension = client.info().dimension
        except ModelServerUnavailableError as error:
            self.stopped = str(error)
        else:
            set_embedding_dimension(settings.database.url, dimension)

    def __call__(self, items: list[tuple[Product, bytes]]) -> list[Product]:
        if not self.stopped:
            try:
                products, summary = with_embeddings(self.client, items)
            except ModelServerUnavailableError as error:
                self.stopped = str(error)
            else:
                self.summary.add(summary)
                return products
        return [p for p, _ in items]


def embed_products(
    settings: Settings, batch_size: int = 64, progress: bool = False
) -> dict[str, Any]:
    """Embed the products without an embedding from the served model version (the catalog
    first moves to the served model's dimension)."""
    started = time.perf_counter()
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        dimension = client.info().dimension
        moved = set_embedding_dimension(settings.database.url, dimension)
        summary = embed_catalog(
            Catalog.of(pool), ObjectStore(settings), client,
            batch_size=batch_size, progress=progress,
        )  # fmt: skip
    took = time.perf_counter() - started
    return {
        "model_version": summary.model_version,
        "dimension": dimension,
        "dimension_changed": moved,
        "embedded": summary.embedded,
        "failed": len(summary.failed),
        "failures": {str(k): v for k, v in list(summary.failed.items())[:20]},  # the first 20
        "seconds": round(took, 1),
        "images_per_s": round(summary.embedded / took, 1) if took else 0.0,
    }
