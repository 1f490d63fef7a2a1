"""Connection pool to the catalog database, with the pgvector type registered."""

from __future__ import annotations

from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from fashion_search.settings import Settings


def _configure(conn: psycopg.Connection[Any]) -> None:
    register_vector(conn)


def create_pool(settings: Settings, conninfo: str | None = None) -> ConnectionPool[Any]:
    """An open pool; the catalog schema must exist (run the migrations first)."""
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo or settings.database_url,
        min_size=1,
        max_size=settings.pool_max_size,
        configure=_configure,
        open=False,
        name="catalog",
    )
    pool.open(wait=True, timeout=30)
    return pool
