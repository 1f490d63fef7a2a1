"""Catalog commands: ``migrate``, ``load``, ``embed``, ``calibrate``."""

from __future__ import annotations

import argparse
import time

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.load import load_catalog
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.repositories import Catalog
from fashion_search.settings import get_settings
from fashion_search.storage import ObjectStore


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the catalog commands."""
    p = commands.add_parser("migrate", help="apply pending catalog migrations")
    p.add_argument("--embedding-dim", type=int, help="dimension for a new catalog")
    p.set_defaults(run=_migrate)

    p = commands.add_parser("load", help="load products (images + metadata) into the catalog")
    p.add_argument("--source", help="parquet path or Hugging Face dataset id (FS_DATASET_SOURCE)")
    p.add_argument("--limit", type=int, help="load at most this many rows")
    p.add_argument("--offset", type=int, default=0, help="skip this many rows first")
    p.add_argument("--dataset", default="catalog", help="value of the products.dataset column")
    p.add_argument("--skip-existing", action="store_true", help="leave loaded products as they are")
    p.set_defaults(run=_load)

    p = commands.add_parser(
        "embed", help="embed products whose embedding is missing or from another model version"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(run=_embed)

    p = commands.add_parser(
        "calibrate", help="measure a model version's relevance cutoff on the judged queries"
    )
    p.add_argument("--version", help="catalog model version (default: the serving one)")
    p.set_defaults(run=_calibrate)


def _migrate(args: argparse.Namespace) -> None:
    settings = get_settings()
    applied = migrate(settings.database.url, args.embedding_dim or settings.database.embedding_dim)
    print("applied: " + ", ".join(applied) if applied else "schema is current")


def _load(args: argparse.Namespace) -> None:
    settings = get_settings()
    migrate(settings.database.url, settings.database.embedding_dim)
    store = ObjectStore(settings)
    store.ensure_buckets()
    started = time.perf_counter()
    with create_pool(settings) as pool:
        summary = load_catalog(
            Catalog.of(pool),
            store,
            args.source or settings.dataset_source,
            dataset=args.dataset,
            offset=args.offset,
            limit=args.limit,
            skip_existing=args.skip_existing,
        )
    took = time.perf_counter() - started
    print(
        f"loaded {summary.loaded} products in {took:.1f} s ({summary.skipped} already there);"
        f" {len(summary.report.rejected)} rows rejected of {summary.report.read} read"
    )
    for row in summary.report.rejected[:20]:
        print(f"  rejected row {row.index} (id {row.product_id}): {row.reason}")


def _embed(args: argparse.Namespace) -> None:
    from fashion_search.workflows.catalog import embed_products

    settings = get_settings()
    migrate(settings.database.url, settings.database.embedding_dim)
    report = embed_products(settings, args.batch_size, progress=True)
    print(
        f"embedded {report.embedded} products with model version {report.model_version}"
        f" in {report.seconds:.1f} s; {report.failed} failed"
    )
    for product_id, reason in report.failures.items():
        print(f"  product {product_id}: {reason}")


def _calibrate(args: argparse.Namespace) -> None:
    from fashion_search.embedding_client import EmbeddingClient
    from fashion_search.learning.calibration import calibrate

    settings = get_settings()
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        catalog = Catalog.of(pool)
        versions = catalog.versions
        version = versions.get(args.version) if args.version else versions.serving()
        calibrated = calibrate(settings, catalog, client, version)
    print(f"model version {calibrated.model_version}: relevance cutoff {calibrated.min_score}")
