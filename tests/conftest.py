"""Fixtures: the real local stack (started once per session through ``stack``), and per-session
test resources on it (a fresh database and buckets) so a user's own catalog is never touched."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.repository import CatalogRepository
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore
from stack.orchestrator import down, up
from stack.postgres import create_database

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub is reachable from the test machines


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings of the running stack; starts what is not running and stops only that after."""
    settings = Settings()
    started = up(settings)
    yield settings
    if started:
        down(settings, tuple(started))


@pytest.fixture(scope="session")
def settings(stack_settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a fresh database and fresh buckets for this test session."""
    run = uuid.uuid4().hex[:8]
    test_settings = stack_settings.model_copy(
        update={
            "database": f"fashion_test_{run}",
            "database_url": make_conninfo(
                stack_settings.database_url, dbname=f"fashion_test_{run}"
            ),
            "images_bucket": f"test-{run}-images",
            "datasets_bucket": f"test-{run}-datasets",
            "models_bucket": f"test-{run}-models",
            "uploads_bucket": f"test-{run}-uploads",
        }
    )
    admin = make_conninfo(stack_settings.database_url, dbname="postgres")
    create_database(admin, test_settings.database)
    store = ObjectStore(test_settings)
    store.ensure_buckets()
    yield test_settings
    for bucket in test_settings.buckets:
        store.delete_bucket(bucket)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(test_settings.database))
        )


@pytest.fixture(scope="session")
def store(settings: Settings) -> ObjectStore:
    """Object store on the test buckets."""
    return ObjectStore(settings)


@pytest.fixture(scope="session")
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    """Pool on the migrated test database."""
    migrate(settings.database_url, settings.embedding_dim)
    with create_pool(settings) as pool:
        yield pool


@pytest.fixture(scope="session")
def repository(pool: ConnectionPool, settings: Settings) -> CatalogRepository:
    """Catalog repository on the test database."""
    return CatalogRepository(pool, settings.hnsw_ef_search)


@pytest.fixture
def scratch_database(stack_settings: Settings) -> Iterator[str]:
    """conninfo of an empty database dropped after the test."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(stack_settings.database_url, dbname="postgres")
    create_database(admin, name)
    yield make_conninfo(stack_settings.database_url, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
