"""``recreate_prod_database``: (re)create the catalog schema, load the dataset (images to the
object store, rows bulk-inserted), embed every product through the model server.

Every step can run again after a failure: loading skips products already stored, embedding
takes only products without an embedding from the served version.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.embed import embed_catalog
from fashion_search.catalog.load import load_catalog
from fashion_search.catalog.migrate import migrate, set_embedding_dimension
from fashion_search.catalog.repository import CatalogRepository
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore


def create_schema(settings: Settings, reset: bool = False) -> dict[str, Any]:
    """Apply the migrations; ``reset`` first drops the catalog (products and migrations)."""
    if reset:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS products, schema_migrations")
    return {"reset": reset, "applied": migrate(settings.database_url, settings.embedding_dim)}


def load_products(settings: Settings, source: str, limit: int | None = None) -> dict[str, Any]:
    """Load ``source`` (first ``limit`` rows); products already stored are left as they are."""
    store = ObjectStore(settings)
    store.ensure_buckets()
    started = time.perf_counter()
    with create_pool(settings) as pool:
        summary = load_catalog(
            CatalogRepository(pool, settings.hnsw_ef_search), store, source,
            limit=limit, skip_existing=True, progress=False,
        )  # fmt: skip
    return {
        "loaded": summary.loaded,
        "skipped": summary.skipped,
        "rejected": len(summary.report.rejected),
        "seconds": round(time.perf_counter() - started, 1),
    }


def embed_products(
    settings: Settings, batch_size: int = 64, progress: bool = False
) -> dict[str, Any]:
    """Embed the products without an embedding from the served model version (the catalog
    first moves to the served model's dimension)."""
    started = time.perf_counter()
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server_address, timeout_s=120) as client,
    ):
        dimension = client.info().dimension
        moved = set_embedding_dimension(settings.database_url, dimension)
        summary = embed_catalog(
            CatalogRepository(pool, settings.hnsw_ef_search), ObjectStore(settings), client,
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
