"""The API under overload and dependency faults, without a stack: a transient fault of
PostgreSQL, its pool, the object store or the model server is a 503 with Retry-After
(REST and GraphQL) instead of a 500, and past the admission limit a request is refused at once
instead of queueing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from botocore.exceptions import EndpointConnectionError
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool, PoolTimeout

import fashion_search.catalog.db as db
from fashion_search.embedding_client import ModelServerOverloadedError
from fashion_search.errors import ProductNotFoundError
from fashion_search.settings import Settings, get_settings
from functions.api.access import AccessControl, get_access
from functions.api.admission import AdmissionLimit
from functions.api.app import create_app
from functions.api.dependencies import get_products, get_service
from functions.api.routes import text_search


class Failing:
    """A search or product service each of whose methods raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def fail(*_: object, **__: object) -> Any:
            raise self.error

        return fail


def app_failing_with(error: Exception) -> FastAPI:
    app = create_app()
    app.dependency_overrides[get_service] = lambda: Failing(error)
    app.dependency_overrides[get_products] = lambda: Failing(error)
    access = AccessControl.of(get_settings().access, lambda: Failing(error))  # type: ignore[arg-type,return-value]
    app.dependency_overrides[get_access] = lambda: access  # no key is sent: none is looked up
    return app


FAULTS: list[tuple[Exception, str]] = [
    (psycopg.OperationalError("connection failed: Connection refused\nIs the server running?"),
     "database unavailable: connection failed: Connection refused"),
    (PoolTimeout("couldn't get a connection after 5.00 sec"),
     "database unavailable: couldn't get a connection after 5.00 sec"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:19000/fashion-images"),
     "object store unavailable: Could not connect to the endpoint URL"),
    (ConnectionRefusedError(111, "Connection refused"), "a dependency unavailable"),
]  # fmt: skip

REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/search/text", {"params": {"q": "navy shirt"}}),  # async route, thread pool
    ("GET", "/products/1", {}),  # plain def route
    ("POST", "/graphql", {"json": {"query": '{ product(id: "1") { id } }'}}),  # a resolver
]


@pytest.mark.parametrize(("error", "message"), FAULTS)
@pytest.mark.parametrize(("method", "path", "kwargs"), REQUESTS)
def test_a_dependency_fault_is_a_503_with_retry_after_and_which_dependency(
    error: Exception, message: str, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = TestClient(app_failing_with(error)).request(method, path, **kwargs)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    body = response.json()
    detail = body["errors"][0]["message"] if path == "/graphql" else body["detail"]
    assert detail.startswith(message), detail
    if path == "/graphql":
        assert body["errors"][0]["extensions"]["status"] == 503


def test_a_dependency_that_fails_to_build_is_a_503() -> None:
    app = create_app()

    def unbuildable() -> None:
        raise PoolTimeout("pool initialization incomplete after 30.0 sec")

    app.dependency_overrides[get_service] = unbuildable
    response = TestClient(app).get("/search/text", params={"q": "shirt"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json()["detail"].startswith("database unavailable: pool initialization")


def wrapped_fault() -> RuntimeError:
    error = RuntimeError("could not read the catalog")
    error.__cause__ = psycopg.OperationalError("server closed the connection unexpectedly")
    return error  # as `raise RuntimeError(...) from cause` leaves it


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (wrapped_fault(), 503, "database unavailable: server closed the connection"),
        (RuntimeError("a bug"), 500, None),
        (psycopg.errors.UndefinedTable('relation "products" does not exist'), 500, None),
        (ProductNotFoundError(1), 404, "product 1 does not exist"),
        (ModelServerOverloadedError("model server: too many calls at once"), 503, "too many"),
    ],
)
def test_only_transient_faults_become_503_and_typed_errors_keep_their_status(
    error: Exception, status: int, detail: str | None
) -> None:
    client = TestClient(app_failing_with(error), raise_server_exceptions=False)
    response = client.get("/products/1")
    assert response.status_code == status, response.text
    assert ("Retry-After" in response.headers) == (status == 503)
    if detail is not None:
        assert detail in response.json()["detail"]


class Blocking:
    """A search service whose text search waits until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def search(self, *_: object) -> Any:
        self.entered.set()
        self.release.wait()
        raise ProductNotFoundError(7)  # any answer will do once released


probe = APIRouter()


@probe.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


def test_past_the_admission_limit_a_request_is_refused_at_once_and_health_is_exempt() -> None:
    blocking = Blocking()
    app = create_app(text_search.router, probe, max_in_flight=1)
    app.dependency_overrides[get_service] = lambda: blocking

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            first = asyncio.create_task(client.get("/search/text", params={"q": "a"}))
            await asyncio.to_thread(blocking.entered.wait)  # the first holds the only slot
            refused = await client.get("/search/text", params={"q": "b"})
            health = await client.get("/health")
            blocking.release.set()
            served = await first
            again = await client.get("/search/text", params={"q": "c"})  # the slot is back
        return [refused, health, served, again]

    try:
        refused, health, served, again = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        blocking.release.set()
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert "FS_API_MAX_IN_FLIGHT" in refused.json()["detail"]
    assert health.status_code == 200
    assert served.status_code == 404 and again.status_code == 404  # both reached the handler


def test_a_failed_request_gives_its_slot_back() -> None:
    app = create_app(text_search.router, max_in_flight=1)
    app.dependency_overrides[get_service] = lambda: Failing(RuntimeError("a bug"))
    client = TestClient(app, raise_server_exceptions=False)
    statuses = [client.get("/search/text", params={"q": "a"}).status_code for _ in range(3)]
    assert statuses == [500, 500, 500]  # not 503: the failed one left the limit


def test_the_admission_limit_follows_the_pool_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FS_API_MAX_IN_FLIGHT", "FS_POOL_MAX_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().search.api_max_in_flight == 32
    monkeypatch.setenv("FS_POOL_MAX_SIZE", "2")
    assert Settings().search.api_max_in_flight == 8
    monkeypatch.setenv("FS_API_MAX_IN_FLIGHT", "5")
    assert Settings().search.api_max_in_flight == 5
    [middleware] = [m for m in create_app().user_middleware if m.cls is AdmissionLimit]
    assert middleware.kwargs == {"limit": get_settings().search.api_max_in_flight}
    with pytest.raises(ValueError, match="at least 1"):
        AdmissionLimit(create_app(), limit=-1)


def test_the_pool_checks_connections_and_waits_for_one_only_briefly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[dict[str, Any]] = []
    check_connection = ConnectionPool.check_connection

    class Recorder:
        def __init__(self, conninfo: str, **kwargs: Any) -> None:
            made.append(kwargs)

        def open(self, wait: bool, timeout: float) -> None:
            made[-1]["opened_waiting"] = wait

    Recorder.check_connection = check_connection  # type: ignore[attr-defined]
    monkeypatch.setattr(db, "ConnectionPool", Recorder)
    settings = Settings().replace(database={"pool_timeout_s": 2.5})
    db.create_pool(settings, wait=False)
    [kwargs] = made
    assert kwargs["timeout"] == 2.5 and kwargs["opened_waiting"] is False
    assert kwargs["check"] is check_connection
