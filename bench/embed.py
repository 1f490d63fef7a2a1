"""Embedding the catalog by the served version two ways in one run: every image through the
model server, and with the image embeddings the version's training stored
(``FS_REGISTRY__REUSE_TRAINING_EMBEDDINGS``, decision 0048). It runs against the running
stack (``make up``) and writes into scratch databases and a scratch images bucket:

    .venv/bin/python -m bench.embed --limit 5000 --markdown docs/benchmarks.md

Prints each way's seconds and images/s, the ratio, and the smallest cosine between the two
ways' vectors of a product.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.report import Report, Table, add_markdown_option
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.embed import embed_catalog
from fashion_search.catalog.load import load_catalog
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import ObjectStore
from stack.postgres import create_database

Vectors = dict[int, np.ndarray[Any, np.dtype[np.float32]]]


def embed_scratch(settings: Settings, client: EmbeddingClient, limit: int) -> tuple[float, Vectors]:
    """Seconds :func:`embed_catalog` took on a scratch catalog of ``limit`` products, and the
    vectors it stored."""
    info = client.info()
    admin = make_conninfo(settings.database.url, dbname="postgres")
    create_database(admin, settings.database.name)
    try:
        migrate(settings.database.url, info.dimension)
        with create_pool(settings) as pool:
            catalog, store = Catalog.of(pool), ObjectStore(settings)
            load_catalog(catalog, store, settings.dataset_source, limit=limit, progress=False)
            version = catalog.versions.bootstrap(info.registry_version, info.dimension)
            started = time.perf_counter()
            summary = embed_catalog(catalog, store, client, version, progress=False)
            took = time.perf_counter() - started
            if summary.embedded != limit or summary.failed:
                raise SystemExit(f"embedded {summary.embedded} of {limit}: {summary.failed}")
        with psycopg.connect(settings.database.url) as conn:
            register_vector(conn)
            rows = conn.execute("SELECT product_id, embedding FROM product_embeddings").fetchall()
        return took, {product_id: vector.to_numpy() for product_id, vector in rows}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            statement = sql.SQL("DROP DATABASE {} WITH (FORCE)")
            conn.execute(statement.format(sql.Identifier(settings.database.name)))


def main() -> None:
    """Run both ways and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=5000, help="products in the catalog")
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.embed")
    settings = get_settings()
    run = uuid.uuid4().hex[:6]
    scratch = settings.replace(storage={"images_bucket": f"bench-{run}-images"})
    ObjectStore(scratch).ensure_buckets([scratch.storage.images_bucket])
    found: dict[str, tuple[float, Vectors]] = {}
    try:
        with EmbeddingClient(settings.model_server.address, timeout_s=120) as client:
            info = client.info()
            report.add(
                f"Model {info.registry_name} v{info.registry_version} ({info.precision} towers,"
                f" {', '.join(info.execution_providers)}); {args.limit:,} products"
            )
            for way, reuse in (("model server", False), ("stored by training", True)):
                name = f"{settings.database.name}_bench_{run}_{int(reuse)}"
                url = make_conninfo(settings.database.url, dbname=name)
                way_settings = scratch.replace(
                    database={"name": name, "url": url},
                    registry={"reuse_training_embeddings": reuse},
                )
                found[way] = embed_scratch(way_settings, client, args.limit)
    finally:
        ObjectStore(scratch).delete_bucket(scratch.storage.images_bucket)
    base = found["model server"][0]
    report.add(
        Table(
            "Embedding the catalog (embed_catalog, the make up and rollout path; ratio: against"
            " the model server)",
            ["images from", "products", "seconds", "images/s", "ratio"],
            [
                [way, len(vectors), took, len(vectors) / took, base / took]
                for way, (took, vectors) in found.items()
            ],
        )
    )
    served, stored = found["model server"][1], found["stored by training"][1]
    cosine = min(
        float(served[i] @ stored[i] / np.linalg.norm(served[i]) / np.linalg.norm(stored[i]))
        for i in served
    )
    report.add(f"smallest cosine between a product's two vectors: {cosine:.6f}")
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
