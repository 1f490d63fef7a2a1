"""Inputs that cannot take the API down, in process (no stack): body limits on every route
(1 GB JSON and multipart bodies cut off at the limit), the GraphQL cost limit, introspection
off, CORS for the UI's origin only, NUL characters and out-of-range integers answered 4xx, and
rate limits answered 429 with Retry-After. The services behind the routes are stand-ins that
fail the test if a refused request reaches them."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from graphql import parse, validate

from fashion_search.catalog.api_keys import ApiKey, Scope, key_digest
from fashion_search.settings import AccessSettings, get_settings
from functions.api.access import AccessControl, get_access
from functions.api.app import create_app
from functions.api.dependencies import get_feedback, get_products, get_service
from functions.api.graphql_cost import QueryCostLimiter
from functions.api.routes.graphql import build_schema

GB = 1024**3
FANOUT = (
    "{ "
    + " ".join(
        f"a{i}: products(first: 100) {{ edges {{ node {{ similar(k: 100) {{ score }} }} }} }}"
        for i in range(3)
    )
    + " }"
)


class Unreachable:
    """A service that must not be called (its settings aside): the request should have been
    refused before."""

    settings = get_settings()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a refused request reached the service ({name})")


class FakeKeys:
    """In-memory key records (the real table is tried in tests/test_api_access.py)."""

    def __init__(self) -> None:
        self.keys: dict[bytes, ApiKey] = {}

    def add(self, key: str, scope: Scope) -> None:
        now = datetime.now(UTC)
        record = ApiKey(id=len(self.keys) + 1, name="t", scope=scope, prefix=key[:10],
                        created_at=now, revoked_at=None)  # fmt: skip
        self.keys[key_digest(key)] = record

    def find(self, key: str) -> ApiKey | None:
        return self.keys.get(key_digest(key))


def client_with(**access: Any) -> tuple[TestClient, FakeKeys]:
    keys = FakeKeys()
    app = create_app()
    control = AccessControl.of(
        get_settings().access.model_copy(update=access),
        lambda: keys,  # type: ignore[arg-type,return-value]
    )
    app.dependency_overrides[get_service] = Unreachable
    app.dependency_overrides[get_products] = Unreachable
    app.dependency_overrides[get_feedback] = Unreachable
    app.dependency_overrides[get_access] = lambda: control
    return TestClient(app, raise_server_exceptions=False), keys


@pytest.fixture
def api() -> Iterator[TestClient]:
    client, _ = client_with()
    with client:
        yield client


def endless(total: int, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """``total`` bytes, streamed (no Content-Length: chunked)."""
    sent = 0
    while sent < total:
        sent += chunk
        yield b"{" * chunk


@pytest.mark.parametrize("path", ["/search/text", "/graphql", "/search/image"])
def test_a_1_gb_body_declared_is_refused_before_reading(api: TestClient, path: str) -> None:
    started = time.perf_counter()
    response = api.post(
        path, content=b"{}", headers={"Content-Length": str(GB), "Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert "limit" in response.json()["detail"]
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/search/text", "application/json"),
        ("/graphql", "application/json"),
        ("/search/image", "application/json"),
        ("/search/image", "multipart/form-data; boundary=x"),
    ],
)
def test_a_1_gb_streamed_body_is_cut_off_at_the_limit(
    api: TestClient, path: str, content_type: str
) -> None:
    started = time.perf_counter()
    body = endless(GB)
    if content_type.startswith("multipart"):
        head = b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        body = itertools.chain([head], endless(GB))
    response = api.post(path, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 413, response.text
    assert time.perf_counter() - started < 30  # read up to the limit (MBs), never the GB


def test_graphql_fan_out_is_refused_by_its_cost(api: TestClient) -> None:
    response = api.post("/graphql", json={"query": FANOUT})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert "query cost" in error["message"] and "limit" in error["message"]


def test_graphql_cost_counts_variables_as_their_largest_value(api: TestClient) -> None:
    query = (
        "query ($n: Int!) { products(first: $n) { edges { node { similar(k: $n) { score } } } } }"
    )
    response = api.post("/graphql", json={"query": query, "variables": {"n": 1}})
    assert response.status_code == 400
    assert "query cost" in response.json()["errors"][0]["message"]


def test_ordinary_graphql_documents_are_within_the_cost_limit() -> None:
    schema = build_schema(AccessSettings())._schema
    limiter = QueryCostLimiter(AccessSettings().graphql_max_cost, {"first": 100, "k": 100})
    fields = "id productDisplayName gender masterCategory subCategory articleType baseColour"
    for document in (
        f"{{ products(first: 100) {{ edges {{ node {{ {fields} imageUrl }} }} totalCount }} }}",
        f'{{ searchByText(query: "red", k: 100) {{ hits {{ score product {{ {fields} }} }} }} }}',
        "{ products(first: 20) { edges { node { id similar(k: 5) { score product { id } } } } } }",
    ):
        assert not validate(schema, parse(document), limiter.validation_rules), document
    assert validate(schema, parse(FANOUT), limiter.validation_rules)


def test_introspection_and_graphiql_are_off_by_default(api: TestClient) -> None:
    response = api.post("/graphql", json={"query": "{ __schema { types { name } } }"})
    assert response.status_code == 400
    assert "introspection" in response.json()["errors"][0]["message"].lower()
    page = api.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code in (404, 405) or "graphiql" not in page.text.lower()


def test_introspection_can_be_turned_on() -> None:
    schema = build_schema(AccessSettings(graphql_introspection=True))
    result = schema.execute_sync("{ __schema { queryType { name } } }")
    assert result.errors is None and result.data == {"__schema": {"queryType": {"name": "Query"}}}


def test_cors_allows_the_ui_origin_only(api: TestClient) -> None:
    ui = get_settings().access.cors_origins.split(",")[0]
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key",
    }
    allowed = api.options("/search/text", headers={"Origin": ui, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ui
    refused = api.options("/search/text", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/search/text", {"params": {"q": "shirt\x00"}}),
        ("GET", "/search/text", {"params": {"q": "shirt", "year": "137914771953665"}}),
        ("GET", "/search/text", {"params": {"q": "shirt", "gender": "Men\x00"}}),
        ("POST", "/search/text", {"json": {"q": "a\x00b"}}),
        ("POST", "/search/text", {"json": {"q": "a", "filters": {"year": 2**40}}}),
        ("POST", "/search/text", {"json": {"q": "a", "k": 2**70}}),
        ("GET", "/products/137914771953665000000", {}),
        ("GET", "/products/1/similar", {"params": {"k": "-9223372036854775809"}}),
        ("GET", "/products/1/similar", {"params": {"year": "-2147483649"}}),
        ("POST", "/search/image", {"json": {"key": "a\x00b"}}),
        ("POST", "/search/image", {"json": {"imageBase64": "aGk=", "k": 10**30}}),
        ("POST", "/search/image", {"files": {"image": b"x"}, "data": {"filters": "{not json"}}),
        ("POST", "/search/image", {"files": {"image": b"x"}, "data": {"k": "9" * 40}}),
    ],
)
def test_nul_characters_and_out_of_range_integers_are_client_errors(
    api: TestClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = api.request(method, path, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert "detail" in response.json()


@pytest.mark.parametrize(
    "query",
    [
        '{ searchByText(query: "a\\u0000b") { mode } }',
        "{ products(first: 10, filter: {year: [2147483648]}) { totalCount } }",
        '{ products(first: 10, filter: {gender: ["Men\\u0000"]}) { totalCount } }',
        '{ searchSimilar(id: "99999999999999999999999", k: 10) { mode } }',
    ],
)
def test_graphql_nul_characters_and_out_of_range_integers_are_client_errors(
    query: str,
) -> None:
    from fashion_search.search.products import ProductService
    from fashion_search.search.service import SearchService

    client, _ = client_with()
    service = SearchService(get_settings(), Unreachable(), Unreachable(), Unreachable())  # type: ignore[arg-type]
    products = ProductService(Unreachable(), Unreachable())  # type: ignore[arg-type]
    client.app.dependency_overrides[get_service] = lambda: service  # type: ignore[attr-defined]
    client.app.dependency_overrides[get_products] = lambda: products  # type: ignore[attr-defined]
    response = client.post("/graphql", json={"query": query})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["errors"]


def test_anonymous_requests_are_limited_per_address() -> None:
    client, _ = client_with(rate_limit_per_address="3/minute")
    statuses = [client.get("/search/text", params={"q": "a\x00"}).status_code for _ in range(4)]
    assert statuses[:3] == [422, 422, 422]  # counted, then refused on its own merits
    assert statuses[3] == 429
    response = client.get("/search/text", params={"q": "a\x00"})
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "rate limit" in response.json()["detail"]


def test_keyed_requests_are_limited_per_key() -> None:
    client, keys = client_with(rate_limit_per_key="2/minute", rate_limit_per_address="100/minute")
    keys.add("fsk_" + "a" * 40, "search")
    keys.add("fsk_" + "b" * 40, "search")
    a, b = {"X-API-Key": "fsk_" + "a" * 40}, {"X-API-Key": "fsk_" + "b" * 40}
    bad = {"params": {"q": "a\x00"}}
    assert [client.get("/search/text", headers=a, **bad).status_code for _ in range(3)] == [
        422, 422, 429,
    ]  # fmt: skip
    assert client.get("/search/text", headers=b, **bad).status_code == 422  # its own count
    assert client.get("/search/text", **bad).status_code == 422  # and the address's


def test_made_up_keys_count_against_the_address() -> None:
    client, _ = client_with(rate_limit_per_address="2/minute")
    statuses = [
        client.get("/search/text", params={"q": "a"}, headers={"X-API-Key": f"fsk_{i}"}).status_code
        for i in range(3)
    ]
    assert statuses == [401, 401, 429]


#: Bodies with a number to replace: every number a JSON body of the API takes.
NUMBER_BODIES = [
    ("/search/text", '{"q": [{"text": "red", "weight": NUMBER}]}'),
    ("/search/text", '{"terms": [{"text": "red", "weight": NUMBER}]}'),  # unknown name too
    ("/search/text", '{"q": "red", "k": NUMBER}'),
    ("/search/text", '{"q": "red", "minScore": NUMBER}'),
    ("/search/text", '{"q": "red", "candidates": NUMBER}'),
    ("/search/text", '{"q": "red", "filters": {"year": NUMBER}}'),
    ("/search/image", '{"productId": NUMBER}'),
    ("/search/image", '{"productId": 1, "k": NUMBER}'),
    ("/search/image", '{"productId": 1, "minScore": NUMBER}'),
    ("/feedback", '{"signal": "click", "query": "q", "productId": NUMBER, "position": 1,'
                  ' "sessionId": "s"}'),
    ("/feedback", '{"signal": "click", "query": "q", "productId": 1, "position": NUMBER,'
                  ' "sessionId": "s"}'),
]  # fmt: skip
#: Non-finite (1e999 parses as infinity) and out-of-range numbers, as JSON bodies write them.
BAD_NUMBERS = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1e308", "-1e308", "2e19"]


@pytest.mark.parametrize(("path", "body"), NUMBER_BODIES)
@pytest.mark.parametrize("number", BAD_NUMBERS)
def test_non_finite_and_out_of_range_numbers_in_bodies_are_client_errors(
    api: TestClient, path: str, body: str, number: str
) -> None:
    response = api.post(path, content=body.replace("NUMBER", number),
                        headers={"content-type": "application/json"})  # fmt: skip
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($w: Float!) { searchByText(terms: [{text: \"red\", weight: $w}]) { mode } }",
         '{"w": NUMBER}'),
        ("query($m: Float!) { searchByText(query: \"red\", refine: {minScore: $m}) { mode } }",
         '{"m": NUMBER}'),
        ("query($k: Int!) { searchByText(query: \"red\", k: $k) { mode } }", '{"k": NUMBER}'),
    ],
)  # fmt: skip
@pytest.mark.parametrize("number", BAD_NUMBERS)
def test_graphql_non_finite_and_out_of_range_numbers_are_client_errors(
    query: str, variables: str, number: str
) -> None:
    from fashion_search.search.service import SearchService

    client, _ = client_with()
    service = SearchService(get_settings(), Unreachable(), Unreachable(), Unreachable())  # type: ignore[arg-type]
    client.app.dependency_overrides[get_service] = lambda: service  # type: ignore[attr-defined]
    body = f'{{"query": {json.dumps(query)}, "variables": {variables.replace("NUMBER", number)}}}'
    response = client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500 and response.json()["errors"], response.text
