"""Search reads from a PostgreSQL streaming replica: the stack's ``pg-replica`` (pg_basebackup +
hot standby) serves the API's reads, a lagging replica is skipped, a product written on the
primary is found at once (read-your-writes), and a stopped replica sends reads to the primary;
``/health`` shows the replica's lag."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.models import Product
from fashion_search.catalog.products import ProductRepository
from fashion_search.catalog.replicas import lsn_bytes
from fashion_search.settings import Settings
from stack.orchestrator import down, up
from stack.service import http_ok
from tests.conftest import SEARCH_ROWS
from tests.helpers import free_port, scrape, start_process, until

NEW_ID = 990_001  # a product written on the primary during the test, then deleted


@pytest.fixture(scope="module")
def replica(stack_settings: Settings, search_settings: Settings) -> Iterator[str]:
    """The stack's replica (made for this module, deleted after): conninfo of the search
    catalog on it, once it has replayed the catalog."""
    up(stack_settings, ("pg-replica",))
    try:
        conninfo = make_conninfo(
            search_settings.database.url, port=str(stack_settings.stack.pg_replica_port)
        )
        until(lambda: _products_on(conninfo) == SEARCH_ROWS, 30)
        yield conninfo
    finally:
        down(stack_settings, ("pg-replica",), purge=True)


def _products_on(conninfo: str) -> int | None:
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM products").fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


@pytest.fixture(scope="module")
def api_settings(search_settings: Settings) -> Settings:
    """An API's settings: reading from the replica (checked every 0.2 s, at most 1 s
    behind), its own ports."""
    port = free_port()
    return search_settings.replace(
        database={
            "replicas": f"127.0.0.1:{search_settings.stack.pg_replica_port}",
            "replica_check_s": 0.2,
            "replica_max_lag_s": 1.0,
        },
        search={"api_port": port, "api_url": f"http://127.0.0.1:{port}"},
        telemetry={"metrics_port": free_port()},
    )


@pytest.fixture(scope="module")
def api(
    api_settings: Settings, replica: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """The API of ``api_settings``, running."""
    process = start_process(
        "api", ["-m", "functions"], api_settings, tmp_path_factory.mktemp("replica-api"),
        lambda: http_ok(f"{api_settings.search.api_url}/health"),
    )  # fmt: skip
    try:
        with httpx.Client(base_url=api_settings.search.api_url, timeout=30) as client:
            yield client
    finally:
        process.stop()


def _catalog_health(api: httpx.Client) -> dict[str, Any]:
    response = api.get("/health")
    assert response.status_code == 200, response.text  # a replica's state never fails it
    catalog: dict[str, Any] = response.json()["catalog"]
    return catalog


def _replica_health(api: httpx.Client) -> dict[str, Any]:
    (replica,) = _catalog_health(api)["replicas"]
    return dict(replica)


def _replica_metrics(settings: Settings, address: str) -> dict[str, float]:
    samples = scrape(settings.telemetry.metrics_port)
    label = f'{{replica="{address}"}}'
    return {
        name: samples[f"fashion_search_catalog_replica_{name}{label}"]
        for name in ("fit", "lag_bytes", "lag_seconds")
        if f"fashion_search_catalog_replica_{name}{label}" in samples
    }


def test_lsn_bytes_reads_a_wal_position() -> None:
    assert lsn_bytes("0/0") == 0
    assert lsn_bytes("16/B374D848") == (0x16 << 32) + 0xB374D848


def test_searches_read_from_the_replica_and_health_and_metrics_show_its_lag(
    api: httpx.Client, api_settings: Settings, replica: str, search_settings: Settings
) -> None:
    health = _replica_health(api)
    assert health["address"] == f"127.0.0.1:{search_settings.stack.pg_replica_port}"
    assert health["ok"] is True, health
    assert health["lagBytes"] >= 0 and health["lagSeconds"] >= 0

    for query in ("blue shirt", "black shoes", "red dress"):
        response = api.get("/search/text", params={"q": query, "k": 5})
        assert response.status_code == 200, response.text
        assert len(response.json()["hits"]) == 5
    # The API's sessions on the replica ran the vector search.
    with psycopg.connect(replica) as conn:
        queries = [
            str(row[0])
            for row in conn.execute(
                "SELECT query FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    assert any("<=>" in q for q in queries), queries
    metrics = _replica_metrics(api_settings, health["address"])
    assert metrics["fit"] == 1.0 and metrics["lag_bytes"] >= 0 and metrics["lag_seconds"] >= 0


def test_a_lagging_replica_is_skipped_and_new_products_are_read_from_the_primary(
    api: httpx.Client, replica: str, search_settings: Settings
) -> None:
    with (
        psycopg.connect(replica, autocommit=True) as standby,
        create_pool(search_settings) as pool,
    ):
        products = ProductRepository(pool)
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            new = Product(id=NEW_ID, product_display_name="Replica Probe Tee", image_key="x.jpg")
            products.upsert_many([new])
            row = standby.execute("SELECT count(*) FROM products WHERE id = %s", (NEW_ID,))
            assert row.fetchone() == (0,)  # not replayed there
            # Read-your-writes: the replica lacks it, the primary answers.
            response = api.get(f"/products/{NEW_ID}")
            assert response.status_code == 200, response.text
            assert response.json()["productDisplayName"] == "Replica Probe Tee"

            # Past the allowed lag (as its checks see it), the replica is skipped: reads see
            # the primary's catalog.
            until(lambda: _replica_health(api)["ok"] is False, 10)
            health = _replica_health(api)
            assert health["ok"] is False and health["lagBytes"] > 0, health
            assert health["lagSeconds"] > 1.0 and "behind" in health["error"]
            assert _catalog_health(api)["products"] == SEARCH_ROWS + 1
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
            products.delete([NEW_ID])
    # Caught up again, it serves reads again.
    until(lambda: _replica_health(api)["ok"] is True, 30)
    until(lambda: _products_on(replica) == SEARCH_ROWS, 30)
    assert _catalog_health(api)["products"] == SEARCH_ROWS


def test_a_stopped_replica_sends_searches_to_the_primary(
    api: httpx.Client, api_settings: Settings, replica: str, stack_settings: Settings
) -> None:
    down(stack_settings, ("pg-replica",))
    try:
        for i in range(10):
            response = api.get("/search/text", params={"q": f"navy shirt {i}", "k": 3})
            assert response.status_code == 200, response.text
        assert api.get("/facets").status_code == 200
        health = _replica_health(api)
        assert health["ok"] is False and health["error"], health
        assert _catalog_health(api)["ok"] is True
        assert _replica_metrics(api_settings, health["address"]) == {"fit": 0.0}  # no lag measured
    finally:
        up(stack_settings, ("pg-replica",))
    # Back up, it is checked again and serves reads again.
    until(lambda: _replica_health(api)["ok"] is True, 30)
