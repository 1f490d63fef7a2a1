"""``recreate_prod_database``: (re)create the catalog schema, load the dataset (images to the
object store, embedded through the model server from the bytes in hand, rows bulk-inserted
with their embeddings), then embed whatever is still without an embedding of the serving
version. The load and the embedding split into parts that run as parallel tasks: the load by
ranges of dataset rows (:func:`plan_load`), the embedding by :class:`Shard` of product ids.

Every step can run again after a failure: loading skips products already stored, embedding
takes only products without an embedding from the served version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.embed import (
    EmbedSummary,
    Known,
    embed_catalog,
    stored_embeddings,
    with_embeddings,
)
from fashion_search.catalog.load import load_catalog
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.models import Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.shards import WHOLE, Shard
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.dataset import count_rows
from fashion_search.embedding_client import EmbeddingClient, ModelServerUnavailableError
from fashion_search.learning.calibration import calibrate_when_due
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore


@dataclass(frozen=True)
class SchemaReport:
    """What :func:`create_schema` did."""

    reset: bool
    applied: list[str]


@dataclass(frozen=True)
class LoadPart:
    """Consecutive dataset rows that one task loads."""

    offset: int
    limit: int | None


@dataclass(frozen=True)
class LoadPlan:
    """How a load splits (:func:`plan_load`)."""

    bulk: bool  # into an empty catalog, without the HNSW index
    model_version: str | None  # the version that embeds it (None: the model server is down)
    parts: list[LoadPart]


@dataclass(frozen=True)
class PartLoaded:
    """What :func:`load_part` loaded and embedded."""

    offset: int
    loaded: int
    skipped: int
    rejected: int
    model_version: str | None
    embedded: int
    embed_failed: int
    embed_stopped: str | None
    seconds: float


@dataclass(frozen=True)
class Indexed:
    """The live versions whose HNSW index :func:`finish_load` ensured."""

    indexed: list[str]
    seconds: float


@dataclass(frozen=True)
class EmbedReport:
    """What :func:`embed_products` embedded (the first 20 failures) and the version's cutoff."""

    shard: int
    model_version: str
    dimension: int
    embedded: int
    failed: int
    failures: dict[str, str]
    min_score: float | None
    seconds: float
    images_per_s: float


def create_schema(settings: Settings, reset: bool = False) -> SchemaReport:
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
    return SchemaReport(reset, applied)


def serving_version(catalog: Catalog, client: EmbeddingClient) -> CatalogVersion:
    """The catalog's serving version; for a catalog that has none yet, the model server's
    champion becomes it (a new catalog's first model)."""
    serving = catalog.versions.find_serving()
    if serving is not None:
        return serving
    info = client.info()
    return catalog.versions.bootstrap(info.registry_version, info.dimension)


def plan_load(
    settings: Settings, source: str, limit: int | None = None, shards: int = 1
) -> LoadPlan:
    """How a load of ``source`` (first ``limit`` rows) splits into ``shards`` parts of
    consecutive rows (one part when the source's size is unknown), each for a task of its own.

    Into an empty catalog the embeddings go without the HNSW index: it is dropped here and
    built once by :func:`finish_load`.
    """
    rows = count_rows(source)
    total = limit if rows is None else (rows if limit is None else min(rows, limit))
    if total is None or shards <= 1:
        parts = [LoadPart(0, total)]
    else:
        size = -(-total // shards)
        parts = [LoadPart(o, min(size, total - o)) for o in range(0, total, size)]
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        catalog = Catalog.of(pool)
        try:
            version: str | None = serving_version(catalog, client).model_version
        except ModelServerUnavailableError:
            version = None  # the load stores the products; embed_products embeds them later
        bulk = version is not None and catalog.products.count() == 0
        if bulk and version:
            catalog.versions.drop_index(version)
    return LoadPlan(bulk, version, parts)


def load_part(
    settings: Settings, source: str, offset: int = 0, limit: int | None = None
) -> PartLoaded:
    """Load ``limit`` rows of ``source`` from ``offset``; products already stored are left as
    they are.

    Each batch is embedded by the serving version from the images in hand before its rows are
    written (one pass: no image is read back from the store, no row written twice). An
    unreachable model server stops the embedding, not the load; :func:`embed_products` embeds
    what is left either way.
    """
    store = ObjectStore(settings)
    store.ensure_buckets()
    started = time.perf_counter()
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        catalog = Catalog.of(pool)
        embedder = _LoadEmbedder(catalog, client, store)
        summary = load_catalog(
            catalog, store, source, offset=offset,
            limit=limit, skip_existing=True, progress=False, embed=embedder,
        )  # fmt: skip
    return PartLoaded(
        offset=offset,
        loaded=summary.loaded,
        skipped=summary.skipped,
        rejected=len(summary.report.rejected),
        model_version=embedder.version,
        embedded=embedder.summary.embedded,
        embed_failed=len(embedder.summary.failed),
        embed_stopped=embedder.stopped,
        seconds=round(time.perf_counter() - started, 1),
    )


def finish_load(settings: Settings) -> Indexed:
    """After the parts (whether they succeeded or not): each live version's HNSW index built
    if a bulk load dropped it."""
    started = time.perf_counter()
    with create_pool(settings) as pool:
        versions = Catalog.of(pool).versions
        live = [v.model_version for v in versions.live()]
        for version in live:
            versions.ensure_index(version)
    return Indexed(live, round(time.perf_counter() - started, 1))


def load_products(settings: Settings, source: str, limit: int | None = None) -> PartLoaded:
    """:func:`plan_load`, :func:`load_part` and :func:`finish_load` in one process."""
    [part] = plan_load(settings, source, limit).parts
    try:
        return load_part(settings, source, part.offset, part.limit)
    finally:
        finish_load(settings)


class _LoadEmbedder:
    """A load's ``embed``: by the serving version (the champion becomes it in a new catalog),
    taking the image embeddings its training stored; at the first sign of an unreachable model
    server it stops embedding and says why in ``stopped``."""

    def __init__(self, catalog: Catalog, client: EmbeddingClient, store: ObjectStore) -> None:
        self.client = client
        self.summary = EmbedSummary("")
        self.stopped: str | None = None
        self.version: str | None = None
        self.known: Known = {}
        try:
            self.version = serving_version(catalog, client).model_version
            self.known = stored_embeddings(store, client, self.version)
        except ModelServerUnavailableError as error:
            self.stopped = str(error)

    def __call__(self, items: list[tuple[Product, bytes]]) -> list[Product]:
        if not self.stopped:
            try:
                products, summary = with_embeddings(
                    self.client, items, version=self.version, known=self.known
                )
            except ModelServerUnavailableError as error:
                self.stopped = str(error)
            else:
                self.summary.add(summary)
                return products
        return [p for p, _ in items]


def embed_products(
    settings: Settings, batch_size: int = 64, progress: bool = False, shard: Shard = WHOLE
) -> EmbedReport:
    """Embed the products (of ``shard``) without an embedding of the serving version (in a new
    catalog the model server's champion becomes it); once it covers the catalog, a version
    without a relevance cutoff is calibrated (:mod:`fashion_search.learning.calibration`)."""
    started = time.perf_counter()
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        catalog = Catalog.of(pool)
        version = serving_version(catalog, client)
        summary = embed_catalog(
            catalog, ObjectStore(settings), client, version,
            batch_size=batch_size, progress=progress, shard=shard,
        )  # fmt: skip
        version = calibrate_when_due(
            settings, catalog, client, catalog.versions.get(version.model_version)
        )
    took = time.perf_counter() - started
    return EmbedReport(
        shard=shard.index,
        model_version=summary.model_version,
        dimension=version.dimension,
        embedded=summary.embedded,
        failed=len(summary.failed),
        failures={str(k): v for k, v in list(summary.failed.items())[:20]},
        min_score=version.min_score,
        seconds=round(took, 1),
        images_per_s=round(summary.embedded / took, 1) if took else 0.0,
    )
