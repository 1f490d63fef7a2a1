"""Connection pool to the catalog database: autocommit connections with the pgvector type
registered and the HNSW search settings made once per session."""

from __future__ import annotations

from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from fashion_search.settings import Settings


def create_pool(settings: Settings, conninfo: str | None = None) -> ConnectionPool[Any]:
    """An open pool; the catalog schema must exist (run the migrations first).

    Connections are in autocommit mode: a read is one round trip (no BEGIN and COMMIT), and
    writes open their transactions explicitly. Each session searches HNSW with
    ``settings.database.hnsw_ef_search`` and relaxed-order iterative scans (so a filtered search
    still finds k rows), so a search needs no ``SET`` of its own, and cancels any statement
    that runs longer than ``settings.database.statement_timeout_ms``.
    """

    def configure(conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, false)",
            (str(settings.database.hnsw_ef_search),),
        )
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)",
            (str(settings.database.statement_timeout_ms),),
        )

    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo or settings.database.url,
        min_size=1,
        max_size=settings.database.pool_max_size,
        kwargs={"autocommit": True},
        configure=configure,
        open=False,
        name="catalog",
    )
    pool.open(wait=True, timeout=30)
    return pool
