"""Fixtures: the real local stack (started once per session through ``stack``), and per-session
test resources on it (a fresh database and buckets) so a user's own catalog is never touched."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.repositories import Catalog
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore
from stack.orchestrator import down, up
from stack.postgres import create_database
from stack.process import ManagedProcess
from stack.secrets import prepare
from stack.service import http_ok
from tests.compose_deployment import deployment  # noqa: F401  (the compose tests' shared fixture)
from tests.helpers import database, start_process

if TYPE_CHECKING:
    from fashion_search.catalog.models import ProductFields
    from fashion_search.search.service import SearchService

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub is reachable from the test machines


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the stack (through any fixture) is marked ``stack``: ``make
    test-unit`` runs the others (``-m "not stack"``)."""
    for item in items:
        if "stack_settings" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings of the running stack (as its owner); starts what is not running and stops only
    that after."""
    prepare(Settings())  # the stack's secrets, and its owner's settings file the next reads
    settings = Settings()
    started = up(settings)
    yield settings
    if started:
        down(settings, tuple(started))


@pytest.fixture(scope="session")
def dataset_products() -> list[ProductFields]:
    """Every product of the dataset the tests use (FS_DATASET_SOURCE), its fields only."""
    from fashion_search.dataset import iter_dataset
    from fashion_search.settings import get_settings

    return [item.fields for item in iter_dataset(get_settings().dataset_source)]


@pytest.fixture(scope="session")
def dataset_values(dataset_products: list[ProductFields]) -> dict[str, set[str]]:
    """camelCase field -> the dataset's values of it."""
    from pydantic.alias_generators import to_camel

    fields = ("gender", "base_colour", "article_type", "season", "usage")
    return {to_camel(f): {str(getattr(p, f)) for p in dataset_products} for f in fields}


@pytest.fixture(scope="session")
def settings(stack_settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a fresh database and fresh buckets for this test session."""
    run = uuid.uuid4().hex[:8]
    test_settings = stack_settings.replace(
        database=database(stack_settings, f"fashion_test_{run}"),
        storage={
            "images_bucket": f"test-{run}-images",
            "datasets_bucket": f"test-{run}-datasets",
            "models_bucket": f"test-{run}-models",
            "uploads_bucket": f"test-{run}-uploads",
        },
        # The default cutoff is the offline default model's; the tests' tiny models score lower.
        search={"min_score": -1.0},
    )
    admin = make_conninfo(stack_settings.database.url, dbname="postgres")
    create_database(admin, test_settings.database.name)
    store = ObjectStore(test_settings)
    store.ensure_buckets()
    yield test_settings
    for bucket in test_settings.storage.buckets:
        store.delete_bucket(bucket)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(test_settings.database.name)
            )
        )


@pytest.fixture(scope="session")
def store(settings: Settings) -> ObjectStore:
    """Object store on the test buckets."""
    return ObjectStore(settings)


@pytest.fixture(scope="session")
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    """Pool on the migrated test database."""
    migrate(settings.database.url, settings.database.embedding_dim)
    with create_pool(settings) as pool:
        yield pool


@pytest.fixture(scope="session")
def catalog(pool: ConnectionPool) -> Catalog:
    """Catalog catalog on the test database."""
    return Catalog.of(pool)


@pytest.fixture
def scratch_database(stack_settings: Settings) -> Iterator[str]:
    """conninfo of an empty database dropped after the test."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(stack_settings.database.url, dbname="postgres")
    create_database(admin, name)
    yield make_conninfo(stack_settings.database.url, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


#: Products in the search tests' catalog (the first rows of the shared dataset).
SEARCH_ROWS = 300


@pytest.fixture(scope="session")
def search_settings(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """A served tiny CLIP and a catalog of SEARCH_ROWS products embedded by it.

    Its own database (the model's dimension) and model name; the model server runs as a real
    process on a free port; the API and UI ports are free ones for the tests that start them.
    """
    from fashion_search.model.factory import ModelSpec
    from fashion_search.model.pipeline import train_and_register
    from fashion_search.model.train import TrainConfig
    from model_server.export import export_version
    from tests.helpers import free_port, start_model_server

    run = uuid.uuid4().hex[:6]
    model_port, api_port = free_port(), free_port()
    search = settings.replace(
        top={"cache_dir": tmp_path_factory.mktemp("search-cache")},
        database=database(settings, f"{settings.database.name}_search"),
        registry={"model_name": f"search-clip-{run}"},
        model_server={"port": model_port, "address": f"127.0.0.1:{model_port}"},
        search={
            "api_port": api_port,
            "api_url": f"http://127.0.0.1:{api_port}",
            "ui_port": free_port(),
        },
        # Business signals off: the search tests compare rankings with the vector math, and
        # feedback recorded by one would lift products in another; test_business_signals
        # turns them on.
        signals={"popularity_weight": 0.0, "newness_weight": 0.0, "boost_weight": 0.0},
    )
    train_and_register(
        search, ModelSpec("fashion-tiny"), TrainConfig(epochs=1, batch_size=64, lr=5e-4),
        search.dataset_source, export_version, limit=SEARCH_ROWS, progress=False,
    )  # fmt: skip
    server = start_model_server(search, tmp_path_factory.mktemp("search-model-server"))
    try:
        with catalog_database(search, SEARCH_ROWS):
            yield search
    finally:
        server.stop()


@contextmanager
def catalog_database(settings: Settings, rows: int) -> Iterator[None]:
    """``settings.database.name`` created with the first ``rows`` products, embedded by the served
    model; dropped on exit."""
    from fashion_search.catalog.embed import embed_catalog
    from fashion_search.catalog.load import load_catalog
    from fashion_search.embedding_client import EmbeddingClient

    admin = make_conninfo(settings.database.url, dbname="postgres")
    create_database(admin, settings.database.name)
    try:
        with EmbeddingClient(settings.model_server.address) as client:
            info = client.info()
            migrate(settings.database.url, info.dimension)
            with create_pool(settings) as pool:
                catalog = Catalog.of(pool)
                store = ObjectStore(settings)
                load_catalog(catalog, store, settings.dataset_source, limit=rows,
                             progress=False)  # fmt: skip
                version = catalog.versions.bootstrap(info.registry_version, info.dimension)
                summary = embed_catalog(catalog, store, client, version, progress=False)
                assert summary.embedded == rows and not summary.failed
        yield
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                    sql.Identifier(settings.database.name)
                )
            )


@pytest.fixture(scope="module")
def api_server(
    search_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """``python -m functions`` (uvicorn) on the search test catalog."""
    process = start_process(
        "api", ["-m", "functions"], search_settings, tmp_path_factory.mktemp("api"),
        lambda: http_ok(f"{search_settings.search.api_url}/health"),
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="module")
def search_service(search_settings: Settings) -> Iterator[SearchService]:
    """The search service on the search tests' catalog and model server (its own pool)."""
    from fashion_search.embedding_client import EmbeddingClient
    from fashion_search.search.service import SearchService

    with (
        create_pool(search_settings) as pool,
        EmbeddingClient(search_settings.model_server.address) as embedder,
    ):
        yield SearchService(
            search_settings, Catalog.of(pool), ObjectStore(search_settings), embedder
        )
