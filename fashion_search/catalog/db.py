"""Connection pool to the catalog database: autocommit connections with the pgvector type
registered and the HNSW search settings made once per session."""

from __future__ import annotations

from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from fashion_search.settings import Settings

#: How long the pool retries (with a backoff from 1 s) to replace a connection before it gives
#: up and lets the next request start a new attempt at once: psycopg_pool's default (300 s)
#: doubles its delay up to a minute, so a database back after an outage of a minute or more
#: waited up to that long for the pool to try again.
RECONNECT_TIMEOUT_S = 2.0


def create_pool(
    settings: Settings, conninfo: str | None = None, *, wait: bool = True
) -> ConnectionPool[Any]:
    """An open pool; the catalog schema must exist (run the migrations first).

    Connections are in autocommit mode: a read is one round trip (no BEGIN and COMMIT), and
    writes open their transactions explicitly. Each session searches HNSW with
    ``settings.database.hnsw_ef_search`` and relaxed-order iterative scans of at most
    ``hnsw_max_scan_tuples`` rows, and knows the filtered search's ``exact_max_rows`` (read by
    :class:`~fashion_search.catalog.vectors.VectorSearch`), so a search needs no ``SET`` of its
    own; it builds indexes with ``index_build_memory_mb`` and cancels any statement that runs
    longer than ``statement_timeout_ms``.

    A connection is checked as it is handed out (one broken by a database restart is replaced,
    not returned), and waiting for one ends after ``settings.database.pool_timeout_s`` with
    ``PoolTimeout``. A connection the pool fails to replace is retried for
    :data:`RECONNECT_TIMEOUT_S` only; then a waiting request starts a new attempt, so the pool
    serves again within about a second of the database's return. ``wait=False`` returns
    before the first connection is made (the API: a database that is down is a 503 per
    request, not a stall while the service is built).
    """

    database = settings.database

    def configure(conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, false),"
            " set_config('hnsw.iterative_scan', 'relaxed_order', false),"
            " set_config('hnsw.max_scan_tuples', %s, false),"
            " set_config('fashion_search.exact_max_rows', %s, false),"
            " set_config('maintenance_work_mem', %s, false),"
            " set_config('statement_timeout', %s, false)",
            (
                str(database.hnsw_ef_search), str(database.hnsw_max_scan_tuples),
                str(database.exact_max_rows), f"{database.index_build_memory_mb}MB",
                str(database.statement_timeout_ms),
            ),
        )  # fmt: skip

    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo or settings.database.url,
        min_size=1,
        max_size=settings.database.pool_max_size,
        kwargs={"autocommit": True},
        configure=configure,
        check=ConnectionPool.check_connection,
        timeout=settings.database.pool_timeout_s,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        open=False,
        name="catalog",
    )
    pool.open(wait=wait, timeout=30)
    return pool
