"""``recreate_prod_database``: (re)create the catalog schema, load the dataset (images to the
object store, embedded through the model server from the bytes in hand, rows bulk-inserted
with their embeddings), then embed whatever is still without an embedding of the serving
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
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.models import Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.embedding_client import EmbeddingClient, ModelServerUnavailableError
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore


def create_schema(settings: Settings, reset: bool = False) -> dict[str, Any]:
    """Apply the migrations (``reset`` first drops the catalog: products, embeddings, versions
    and migrations), and build the HNSW index of each live version if a killed bulk load left
    it dropped."""
    if reset:
        with psycopg.connect(settings.database.url, autocommit=True) as conn:
            conn.execute(
                "DROP TABLE IF EXISTS product_embeddings, catalog_versions, products,"
                " schema_migrations CASCADE"
            )
            conn.execute(
                "DROP FUNCTION IF EXISTS create_embedding_partition, create_embedding_index"
            )
    applied = migrate(settings.database.url, settings.database.embedding_dim)
    with create_pool(settings) as pool:
        versions = Catalog.of(pool).versions
        for version in versions.live():
            versions.ensure_index(version.model_version)
    return {"reset": reset, "applied": applied}


def serving_version(catalog: Catalog, client: EmbeddingClient) -> CatalogVersion:
    """The catalog's serving version; for a catalog that has none yet, the model server's
    champion becomes it (a new catalog's first model)."""
    serving = catalog.versions.find_serving()
    if serving is not None:
        return serving
    info = client.info()
    return catalog.versions.bootstrap(info.registry_version, info.dimension)


def load_products(settings: Settings, source: str, limit: int | None = None) -> dict[str, Any]:
    """Load ``source`` (first ``limit`` rows); products already stored are left as they are.

    Each batch is embedded by the serving version from the images in hand before its rows are
    written (one pass: no image is read back from the store, no row written twice). An
    unreachable model server stops the embedding, not the load; :func:`embed_products` embeds
    what is left either way. Into an empty catalog the embeddings go without the HNSW index,
    which is built once at the end (also when the load fails).
    """
    store = ObjectStore(settings)
    store.ensure_buckets()
    started = time.perf_counter()
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        catalog = Catalog.of(pool)
        embedder = _LoadEmbedder(catalog, client)
        bulk = catalog.products.count() == 0 and embedder.version is not None
        try:
            if bulk and embedder.version:
                catalog.versions.drop_index(embedder.version)
            summary = load_catalog(
                catalog, store, source,
                limit=limit, skip_existing=True, progress=False, embed=embedder,
            )  # fmt: skip
        finally:
            if embedder.version:
                catalog.versions.ensure_index(embedder.version)
    return {
        "loaded": summary.loaded,
        "skipped": summary.skipped,
        "rejected": len(summary.report.rejected),
        "bulk": bulk,
        "model_version": embedder.version,
        "embedded": embedder.summary.embedded,
        "embed_failed": len(embedder.summary.failed),
        "embed_stopped": embedder.stopped,
        "seconds": round(time.perf_counter() - started, 1),
    }


class _LoadEmbedder:
    """A load's ``embed``: by the serving version (the champion becomes it in a new catalog);
    at the first sign of an unreachable model server it stops embedding and says why in
    ``stopped``."""

    def __init__(self, catalog: Catalog, client: EmbeddingClient) -> None:
        self.client = client
        self.summary = EmbedSummary("")
        self.stopped: str | None = None
        self.version: str | None = None
        try:
            self.version = serving_version(catalog, client).model_version
        except ModelServerUnavailableError as error:
            self.stopped = str(error)

    def __call__(self, items: list[tuple[Product, bytes]]) -> list[Product]:
        if not self.stopped:
            try:
                products, summary = with_embeddings(self.client, items, version=self.version)
            except ModelServerUnavailableError as error:
                self.stopped = str(error)
            else:
                self.summary.add(summary)
                return products
        return [p for p, _ in items]


def embed_products(
    settings: Settings, batch_size: int = 64, progress: bool = False
) -> dict[str, Any]:
    """Embed the products without an embedding of the serving version (in a new catalog the
    model server's champion becomes it)."""
    started = time.perf_counter()
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        catalog = Catalog.of(pool)
        version = serving_version(catalog, client)
        summary = embed_catalog(
            catalog, ObjectStore(settings), client, version,
            batch_size=batch_size, progress=progress,
        )  # fmt: skip
    took = time.perf_counter() - started
    return {
        "model_version": summary.model_version,
        "dimension": version.dimension,
        "embedded": summary.embedded,
        "failed": len(summary.failed),
        "failures": {str(k): v for k, v in list(summary.failed.items())[:20]},  # the first 20
        "seconds": round(took, 1),
        "images_per_s": round(summary.embedded / took, 1) if took else 0.0,
    }
