"""Who may call what, against the real catalog's keys: every route and GraphQL field x {no key,
revoked key, search key, admin key} gets the documented status, with search open (the local
demo) and keyed (compose, SAM); keys are created, listed and revoked by the CLI and stored only
as hashes."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fashion_search.catalog.repositories import Catalog
from fashion_search.experiments.design import Design
from fashion_search.search.service import SearchService
from fashion_search.settings import REPO_ROOT, Settings
from fashion_search.storage import product_image_key
from tests.helpers import api_client

NONE, REVOKED, SEARCH, ADMIN = "no key", "revoked key", "search key", "admin key"
CALLERS = (NONE, REVOKED, SEARCH, ADMIN)
#: What each kind of route answers each caller, by FS_API_SEARCH_ACCESS.
EXPECTED: dict[str, dict[str, dict[str, int]]] = {
    "open": {
        "public": {NONE: 200, REVOKED: 200, SEARCH: 200, ADMIN: 200},
        "search": {NONE: 200, REVOKED: 401, SEARCH: 200, ADMIN: 200},
        "admin": {NONE: 401, REVOKED: 401, SEARCH: 403, ADMIN: 200},
    },
    "key": {
        "public": {NONE: 200, REVOKED: 200, SEARCH: 200, ADMIN: 200},
        "search": {NONE: 401, REVOKED: 401, SEARCH: 200, ADMIN: 200},
        "admin": {NONE: 401, REVOKED: 401, SEARCH: 403, ADMIN: 200},
    },
}
GRAPHQL_FIELDS = {
    "products": "{ products(first: 2) { totalCount edges { node { id } } } }",
    "product": '{ product(id: "%(id)s") { id productDisplayName } }',
    "searchByText": '{ searchByText(query: "shirt", k: 2) { hits { score } } }',
    "searchSimilar": '{ searchSimilar(id: "%(id)s", k: 2) { hits { score } } }',
    "Product.similar": '{ product(id: "%(id)s") { similar(k: 2) { score } } }',
    "searchByImage": '{ searchByImage(imageBase64: "%(image)s", k: 2) { hits { score } } }',
    "facetCounts": "{ facetCounts { field values { value count } } }",
    "suggest": '{ suggest(prefix: "sh") { text kind } }',
}


@pytest.fixture(scope="module")
def keys(search_service: SearchService) -> dict[str, str]:
    """A key of each kind, in the test catalog."""
    repo = search_service.catalog.api_keys
    revoked, revoked_key = repo.create("revoked", "search")
    repo.revoke(revoked.id)
    return {
        NONE: "",
        REVOKED: revoked_key,
        SEARCH: repo.create("matrix-search", "search")[1],
        ADMIN: repo.create("matrix-admin", "admin")[1],
    }


def row(kind: str, route: str, path: Any = "", **kwargs: Any) -> tuple[str, str, Any]:
    """A request of ``route`` ("METHOD /template"), to ``path`` (default: the template; a
    function: called for each request, as are the functions among ``kwargs``)."""
    method, template = route.split(" ")
    return kind, route, (method, path or template, kwargs)


@pytest.fixture(scope="module")
def requests(search_service: SearchService, search_settings: Settings) -> Iterator[dict[str, Any]]:
    """One request of each route and GraphQL field: name -> (kind, route, request); the rules
    they make are removed after."""
    product = search_service.catalog.products.list_products(limit=1).items[0]
    store = search_service.store
    image = store.get(search_settings.storage.images_bucket, product_image_key(product.id))
    upload_key = f"access/{product.id}.jpg"
    store.put(search_settings.storage.uploads_bucket, upload_key, image, "image/jpeg")
    by_upload = {"key": upload_key, "bucket": search_settings.storage.uploads_bucket}
    image_b64 = base64.b64encode(image).decode()
    pid = product.id
    rule = {"when": {"query": "matrix rule query"}, "then": {"hide": [pid]}}

    def new_rule() -> int:
        return search_service.merchandising.add(rule, "matrix").id

    experiments = search_service.experiments
    design = {"arms": [{"name": "A", "kind": "serving", "share": 0.5},
                       {"name": "B", "kind": "mode", "value": "vector", "share": 0.5}]}  # fmt: skip

    def none_running() -> str:
        if search_service.catalog.experiments.running():
            experiments.stop(None, "matrix")
        return "/experiments"

    def one_running(path: str) -> Callable[[], str]:
        def started() -> str:
            if not search_service.catalog.experiments.running():
                experiments.start(Design.of(design), "matrix")
            return path

        return started

    routes = {
        "GET /health": row("public", "GET /health"),
        "GET /search/text": row("search", "GET /search/text", params={"q": "shirt"}),
        "POST /search/text": row("search", "POST /search/text", json={"q": "shirt"}),
        "POST /search/image (base64)": row("search", "POST /search/image",
                                           json={"imageBase64": image_b64}),
        "POST /search/image (multipart)": row("search", "POST /search/image",
                                              files={"image": ("a.jpg", image)}),
        "POST /search/image (images key)": row("search", "POST /search/image",
                                               json={"key": product.image_key}),
        "POST /search/image (uploads key)": row("admin", "POST /search/image", json=by_upload),
        "GET /products/{id}": row("search", "GET /products/{product_id}", f"/products/{pid}"),
        "GET /products/{id}/similar": row("search", "GET /products/{product_id}/similar",
                                          f"/products/{pid}/similar"),
        "GET /facets": row("search", "GET /facets"),
        "GET /facets/counts": row("search", "GET /facets/counts"),
        "GET /suggest": row("search", "GET /suggest", params={"prefix": "sh"}),
        "POST /feedback": row("search", "POST /feedback", json={
            "signal": "click", "query": "shirt", "productId": pid, "position": 1,
            "sessionId": "matrix"}),
        "POST /graphql recordFeedback": row("search", "POST /graphql", json={"query": (
            f'mutation {{ recordFeedback(signal: "click", query: "shirt", productId: "{pid}",'
            ' position: 1, sessionId: "matrix") { id } }')}),  # a mutation: POST only
        "GET /rules": row("admin", "GET /rules"),
        "POST /rules": row("admin", "POST /rules", json=rule),
        "DELETE /rules/{rule_id}": row("admin", "DELETE /rules/{rule_id}",
                                       lambda: f"/rules/{new_rule()}"),
        "POST /graphql rules": row("admin", "POST /graphql", json={"query": "{ rules { id } }"}),
        "GET /graphql rules": row("admin", "GET /graphql", params={"query": "{ rules { id } }"}),
        "POST /graphql addRule": row("admin", "POST /graphql", json={
            "query": "mutation($b: JSON!) { addRule(body: $b) { id } }", "variables": {"b": rule}}),
        "POST /graphql removeRule": row("admin", "POST /graphql", json=lambda: {
            "query": f'mutation {{ removeRule(id: "{new_rule()}") }}'}),
        "GET /experiments": row("admin", "GET /experiments", one_running("/experiments")),
        "POST /experiments": row("admin", "POST /experiments", none_running, json=design),
        "POST /experiments/stop": row("admin", "POST /experiments/stop",
                                      one_running("/experiments/stop")),
    }  # fmt: skip
    for field, query in GRAPHQL_FIELDS.items():
        document = query % {"id": pid, "image": image_b64}
        routes[f"POST /graphql {field}"] = row("search", "POST /graphql", json={"query": document})
        routes[f"GET /graphql {field}"] = row("search", "GET /graphql", params={"query": document})
    yield routes
    for entry in search_service.merchandising.entries():
        search_service.merchandising.remove(entry.id)
    none_running()


def test_the_matrix_names_every_route(
    search_service: SearchService, requests: dict[str, Any]
) -> None:
    """A route added without a row here fails this test."""
    schema = api_client(search_service, "key").get("/openapi.json").json()
    served = {f"{m.upper()} {path}" for path, methods in schema["paths"].items() for m in methods}
    assert served == {route for _, route, _ in requests.values()}


@pytest.mark.parametrize("search", ["open", "key"])
def test_every_route_and_field_answers_each_caller_as_documented(
    search_service: SearchService, keys: dict[str, str], requests: dict[str, Any], search: str
) -> None:
    api = api_client(search_service, search)
    got: dict[tuple[str, str], int] = {}
    want: dict[tuple[str, str], int] = {}
    for name, (kind, _, (method, path, kwargs)) in requests.items():
        for caller in CALLERS:
            headers = {"X-API-Key": keys[caller]} if keys[caller] else {}
            fresh = {k: v() if callable(v) else v for k, v in kwargs.items()}  # a rule to remove
            response = api.request(
                method, path() if callable(path) else path, headers=headers, **fresh
            )
            done = response.status_code in (201, 204)  # a record made, or removed
            got[name, caller] = 200 if done else response.status_code
            want[name, caller] = EXPECTED[search][kind][caller]
            if response.status_code == 200 and "graphql" in name:
                assert not response.json().get("errors"), (name, caller, response.text)
            if response.status_code in (401, 403):
                body = response.json()  # a route's refusal, or an admin field's (GraphQL)
                assert body.get("detail") or body["errors"][0]["message"], (name, caller)
    wrong = {k: (got[k], want[k]) for k in got if got[k] != want[k]}
    assert not wrong, wrong


def test_a_revoked_key_is_refused_within_the_cache_time(search_service: SearchService) -> None:
    api = api_client(search_service, "key", key_cache_s=0.5)
    record, key = search_service.catalog.api_keys.create("soon-revoked", "search")
    assert api.get("/facets", headers={"X-API-Key": key}).status_code == 200
    search_service.catalog.api_keys.revoke(record.id)
    time.sleep(0.6)
    response = api.get("/facets", headers={"X-API-Key": key})
    assert response.status_code == 401
    assert "not a valid key" in response.json()["detail"]


def test_keys_are_created_listed_and_revoked_by_the_cli_and_stored_hashed(
    search_settings: Settings, search_service: SearchService
) -> None:
    pool = search_service.catalog.pool

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "fashion_search.cli", "api-keys", *args],
            env=search_settings.to_env(), cwd=REPO_ROOT, capture_output=True, text=True,
            check=True, timeout=120,
        )  # fmt: skip
        return done.stdout

    created = cli("create", "--name", "cli-merchant", "--scope", "admin")
    key = created.splitlines()[0].split(": ")[-1].strip()
    key_id = int(created.split("created key ")[1].split(" ")[0])
    assert key.startswith("fsk_") and len(key) > 40
    listing = cli("list")
    row = next(line for line in listing.splitlines() if line.startswith(f"{key_id} "))
    assert "admin" in row and "active" in row and key[:10] in row and key not in listing
    with pool.connection() as conn:
        leaked = conn.execute(
            "SELECT count(*) FROM api_keys a WHERE a::text LIKE %s", (f"%{key[4:]}%",)
        ).fetchone()
    assert leaked == (0,)  # only the digest and a short prefix are stored
    assert Catalog.of(pool).api_keys.find(key) is not None
    assert "revoked" in cli("revoke", str(key_id))
    assert Catalog.of(pool).api_keys.find(key) is None
    assert f"{key_id} " in cli("list") and "revoked" in cli("list")
