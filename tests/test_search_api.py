"""The search API (REST + GraphQL) against the real catalog, object store and a served tiny CLIP:
every endpoint and field, filters with the HNSW index, and bad input answered with a clear 4xx
while the catalog stays byte-for-byte the same."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.models import METADATA_FIELDS
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.search.service import HYBRID_CANDIDATES, SearchService
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore, product_image_key
from tests.helpers import api_client, catalog_digest

FIELDS = ("id", "productDisplayName", "gender", "masterCategory", "subCategory", "articleType",
          "baseColour", "season", "year", "usage", "score", "imageUrl")  # fmt: skip
CAMEL = {f: "".join(w.capitalize() if i else w for i, w in enumerate(f.split("_")))
         for f in METADATA_FIELDS}  # fmt: skip


@pytest.fixture(scope="module")
def pool(search_settings: Settings) -> Iterator[ConnectionPool]:
    with create_pool(search_settings) as pool:
        yield pool


@pytest.fixture(scope="module")
def service(search_settings: Settings, pool: ConnectionPool) -> Iterator[SearchService]:
    with EmbeddingClient(search_settings.model_server.address) as embedder:
        yield SearchService(
            search_settings, Catalog.of(pool), ObjectStore(search_settings), embedder
        )


@pytest.fixture(scope="module")
def api(service: SearchService) -> Iterator[TestClient]:
    with api_client(service) as client:
        client.raise_server_exceptions = True  # a 500 fails with its traceback
        yield client


@pytest.fixture(scope="module")
def catalog(service: SearchService) -> list[dict[str, Any]]:
    """Every product of the test catalog, as the API shows it (without score)."""
    rows = service.catalog.products.list_products(limit=1000).items
    return [p.model_dump(by_alias=True) for p in rows]


def cosine_scores(service: SearchService, query: str, ids: list[int]) -> list[float]:
    vector = service.embedder.embed_texts([query]).vectors[0]
    serving = service.catalog.versions.serving()
    stored = [service.catalog.products.get(i, serving).embedding for i in ids]
    return [float(vector @ e / np.linalg.norm(vector) / np.linalg.norm(e)) for e in stored]  # type: ignore[operator]


def test_health(api: TestClient, search_settings: Settings) -> None:
    body = api.get("/health").json()
    assert body["ok"] and body["catalog"]["products"] == 300
    assert body["modelServer"]["model"] == search_settings.registry.model_name


def test_openapi_docs_are_served(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    for path in ("/search/text", "/search/image", "/products/{product_id}",
                 "/products/{product_id}/similar", "/health"):  # fmt: skip
        assert path in spec["paths"], path
    assert "multipart/form-data" in json.dumps(spec["paths"]["/search/image"])
    assert api.get("/docs").status_code == 200


def test_text_search_hits_are_the_nearest_products(api: TestClient, service: SearchService) -> None:
    query = {"q": "navy blue casual shirt for men", "k": 7, "mode": "vector", "understand": "off"}
    response = api.get("/search/text", params=query)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "vector" and body["modelVersion"] == "1"
    hits = body["hits"]
    assert len(hits) == 7
    for hit in hits:
        assert set(FIELDS) <= set(hit), hit
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    ids = [h["id"] for h in hits]
    assert np.allclose(cosine_scores(service, "navy blue casual shirt for men", ids),
                       [h["similarity"] for h in hits], atol=1e-4)  # fmt: skip
    exact = service.catalog.vectors.nearest(
        service.catalog.versions.serving(),
        service.embedder.embed_texts(["navy blue casual shirt for men"]).vectors[0],
        7,
        exact=True,
    ).neighbors
    assert ids == [n.product.id for n in exact]
    posted = api.post("/search/text", json=query)
    assert [h["id"] for h in posted.json()["hits"]] == ids
    assert set(body["timingsMs"]) == {"model", "database", "ranking", "urls"}


def test_image_urls_are_presigned_and_serve_the_image(
    api: TestClient, store: ObjectStore, search_settings: Settings
) -> None:
    hit = api.get("/search/text", params={"q": "watch", "k": 1}).json()["hits"][0]
    image = httpx.get(hit["imageUrl"], timeout=10)
    assert image.status_code == 200
    assert image.content == ObjectStore(search_settings).get(
        search_settings.storage.images_bucket, product_image_key(hit["id"])
    )
    unsigned = hit["imageUrl"].split("?")[0]
    assert httpx.get(unsigned, timeout=10).status_code == 403


@pytest.mark.parametrize("field", [*METADATA_FIELDS])
def test_every_metadata_field_filters_with_k_results_when_k_exist(
    api: TestClient, catalog: list[dict[str, Any]], field: str
) -> None:
    name = CAMEL[field]
    values = [p[name] for p in catalog if p[name] is not None]
    common = max(set(values), key=values.count)
    rare = min(set(values), key=values.count)
    for value in (common, rare):
        matching = sum(p[name] == value for p in catalog)
        k = 10
        response = api.get("/search/text", params={"q": "casual", "k": k, name: value})
        assert response.status_code == 200, response.text
        hits = response.json()["hits"]
        assert len(hits) == min(k, matching), (name, value, matching)
        assert all(h[name] == value for h in hits)


def test_filters_combine_and_take_several_values(
    api: TestClient, catalog: list[dict[str, Any]]
) -> None:
    wanted = {"gender": ["Men", "Women"], "masterCategory": "Apparel", "year": 2012}
    matching = [p for p in catalog if p["gender"] in wanted["gender"]
                and p["masterCategory"] == "Apparel" and p["year"] == 2012]  # fmt: skip
    hits = api.post("/search/text", json={"q": "top", "k": 100, "filters": wanted}).json()["hits"]
    assert {h["id"] for h in hits} == {p["id"] for p in matching}
    query = [("q", "top"), ("k", 100), ("gender", "Men"), ("gender", "Women"),
             ("masterCategory", "Apparel"), ("year", 2012)]  # fmt: skip
    assert {h["id"] for h in api.get("/search/text", params=query).json()["hits"]} == {
        p["id"] for p in matching
    }


def test_title_matches_rank_the_exact_title_first(service: SearchService) -> None:
    ids = [i for i, _ in service.catalog.vectors.title_match_ids("Titan Women Silver Watch", 10)]
    assert ids[0] == 59263
    assert all({"titan", "women", "silver", "watch"} <= set(p.product_display_name.lower().split())
               for p in service.catalog.products.get_many(ids))  # fmt: skip
    assert service.catalog.vectors.title_match_ids("the of and", 10) == []  # stop words only


@pytest.mark.parametrize(
    ("query", "filters"),
    [("Titan Women Silver Watch", {"gender": "Women"}), ("Men", {})],  # Men: many title matches
)
def test_hybrid_search_adds_title_matches_to_the_similarity(
    api: TestClient, service: SearchService, query: str, filters: dict[str, str]
) -> None:
    """The k nearest and the HYBRID_CANDIDATES title matches, each scored by its cosine
    similarity plus title_weight times its full-text rank relative to the best match."""
    version = service.catalog.versions.serving()
    vector = service.embedder.embed_texts([query]).vectors[0]
    titles = dict(service.catalog.vectors.title_match_ids(query, HYBRID_CANDIDATES, filters))
    near = service.catalog.vectors.nearest(version, vector, 5, filters).neighbors
    near += service.catalog.vectors.of_ids(version, vector, list(titles))
    weight, best = service.settings.search.title_weight, max(titles.values())
    scores = {n.product.id: n.similarity + weight * titles.get(n.product.id, 0.0) / best
              for n in near if n.similarity is not None}  # fmt: skip
    expected = sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:5]
    params = {"q": query, "k": 5, "mode": "hybrid", "understand": "off", **filters}
    body = api.get("/search/text", params=params).json()
    assert body["mode"] == "hybrid" and titles
    assert [h["id"] for h in body["hits"]] == [i for i, _ in expected]
    # the API's query vector is normalised again (terms.combine): equal to float32 precision
    assert [h["score"] for h in body["hits"]] == pytest.approx([s for _, s in expected], abs=1e-6)


@pytest.mark.parametrize("how", ["multipart", "base64", "data-url", "key"])
def test_image_search_finds_the_same_product_first(
    api: TestClient, search_settings: Settings, how: str
) -> None:
    key = product_image_key(39386)
    data = ObjectStore(search_settings).get(search_settings.storage.images_bucket, key)
    if how == "multipart":
        response = api.post("/search/image", files={"image": ("x.jpg", data, "image/jpeg")},
                            data={"k": "3"})  # fmt: skip
    elif how == "key":
        response = api.post("/search/image", json={"key": key, "k": 3})
    else:
        encoded = base64.b64encode(data).decode()
        prefix = "data:image/jpeg;base64," if how == "data-url" else ""
        response = api.post("/search/image", json={"imageBase64": prefix + encoded, "k": 3})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert len(hits) == 3 and hits[0]["id"] == 39386 and hits[0]["score"] > 0.999


def test_image_search_with_filters(api: TestClient, search_settings: Settings) -> None:
    data = ObjectStore(search_settings).get(
        search_settings.storage.images_bucket, product_image_key(39386)
    )
    response = api.post("/search/image", files={"image": ("x.jpg", data, "image/jpeg")},
                        data={"k": "5", "filters": json.dumps({"gender": "Women"})})  # fmt: skip
    hits = response.json()["hits"]
    assert len(hits) == 5 and all(h["gender"] == "Women" for h in hits)


def test_product_and_similar_products(api: TestClient, catalog: list[dict[str, Any]]) -> None:
    product = api.get("/products/15970").json()
    assert product["productDisplayName"] == "Turtle Check Men Navy Blue Shirt"
    assert product["imageUrl"].startswith("http")
    similar = api.get("/products/15970/similar", params={"k": 5}).json()["hits"]
    assert len(similar) == 5 and 15970 not in [h["id"] for h in similar]
    filtered = api.get("/products/15970/similar", params={"k": 3, "gender": "Women"}).json()
    assert all(h["gender"] == "Women" for h in filtered["hits"])


def graphql(api: TestClient, query: str, **variables: Any) -> httpx.Response:
    return api.post("/graphql", json={"query": query, "variables": variables})


PRODUCTS = """query($first: Int!, $after: String, $filter: ProductFilter) {
  products(first: $first, after: $after, filter: $filter) {
    totalCount edges { cursor node { id productDisplayName gender masterCategory subCategory
    articleType baseColour season year usage modelVersion imageUrl } }
    pageInfo { hasNextPage endCursor } } }"""


def test_graphql_products_paginate_with_cursors(
    api: TestClient, catalog: list[dict[str, Any]]
) -> None:
    seen: list[int] = []
    after = None
    while True:
        response = graphql(api, PRODUCTS, first=40, after=after,
                           filter={"masterCategory": ["Apparel"]})  # fmt: skip
        data = response.json()["data"]["products"]
        seen += [int(e["node"]["id"]) for e in data["edges"]]
        if not data["pageInfo"]["hasNextPage"]:
            break
        after = data["pageInfo"]["endCursor"]
    apparel = [p["id"] for p in catalog if p["masterCategory"] == "Apparel"]
    assert seen == sorted(apparel) and data["totalCount"] == len(apparel)


def test_graphql_product_and_searches(api: TestClient) -> None:
    one = graphql(api, '{ product(id: "15970") { id productDisplayName baseColour imageUrl } }')
    assert one.json()["data"]["product"]["baseColour"] == "Navy Blue"
    assert graphql(api, '{ product(id: "424242") { id } }').json() == {"data": {"product": None}}
    found = graphql(
        api, 'query($f: ProductFilter) { searchByText(query: "watch", k: 4, filter: $f) {'
        " mode modelVersion hits { score product { id gender } } } }", f={"gender": ["Women"]},
    ).json()["data"]["searchByText"]  # fmt: skip
    assert found["modelVersion"] == "1" and len(found["hits"]) == 4
    assert all(h["product"]["gender"] == "Women" for h in found["hits"])
    rest = api.get("/search/text", params={"q": "watch", "k": 4, "gender": "Women"}).json()
    assert [int(h["product"]["id"]) for h in found["hits"]] == [h["id"] for h in rest["hits"]]
    similar = graphql(api, '{ searchSimilar(id: "15970", k: 3) { hits { product { id } } } }')
    ids = [h["product"]["id"] for h in similar.json()["data"]["searchSimilar"]["hits"]]
    assert len(ids) == 3 and "15970" not in ids
    nested = graphql(api, '{ product(id: "15970") { similar(k: 3) { product { id } } } }')
    assert [h["product"]["id"] for h in nested.json()["data"]["product"]["similar"]] == ids


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("GET", "/search/text", {"params": {"q": ""}}, 422, "at least 1 character"),
    ("GET", "/search/text", {"params": {"q": "   "}}, 422, "query: must not be blank"),
    ("GET", "/search/text", {"params": {"q": "shirt", "k": 0}}, 422, "greater than or equal"),
    ("GET", "/search/text", {"params": {"q": "shirt", "k": 10_000}}, 422, "less than or equal"),
    ("GET", "/search/text", {"params": {"q": "shirt", "colour": "Red"}}, 400, "unknown query"),
    ("POST", "/search/text", {"json": {"q": "shirt", "filters": {"colour": "Red"}}}, 422,
     "unknown filter field 'colour'"),
    ("POST", "/search/text", {"json": {"q": "shirt", "key": "a.jpg"}}, 422, "unknown field(s) key"),
    ("POST", "/search/text", {"json": {"q": "shirt", "filters": {"year": "soon"}}}, 422,
     "needs an integer"),
    ("GET", "/search/text", {"params": {"q": "x" * 5000}}, 422, "at most 2000"),
    ("POST", "/search/image", {"files": {"image": ("a.pdf", b"%PDF-1.7", "application/pdf")}},
     422, "not a decodable image"),
    ("POST", "/search/image", {"files": {"image": ("big.jpg", b"\xff" * 20 * 2**20, "image/jpeg")}},
     413, "over this route's limit"),  # cut off as it streams in
    ("POST", "/search/image", {"json": {"imageBase64": "%%%"}}, 422, "not valid base64"),
    ("POST", "/search/image", {"json": {"key": "products/nope.jpg"}}, 404, "does not exist"),
    ("POST", "/search/image", {"json": {"key": "../../etc/passwd"}}, 400, "'..' segment"),
    ("POST", "/search/image", {"json": {"key": "a.jpg", "bucket": "fashion-models"}}, 400,
     "bucket must be one of"),
    ("POST", "/search/image", {"json": {}}, 422, "exactly one of"),
    ("POST", "/search/image", {"content": b"{not json"}, 422, "body is not JSON"),
    ("POST", "/search/image", {"files": {"other": ("a.jpg", b"x", "image/jpeg")}}, 400,
     "field named 'image'"),
    ("GET", "/products/424242", {}, 404, "product 424242 does not exist"),
    ("GET", "/products/abc", {}, 422, "valid integer"),
    ("GET", "/products/424242/similar", {}, 404, "does not exist"),
    ("POST", "/graphql", {"json": {"query": "{ products(first: 2 "}}, 400, "Syntax Error"),
    ("POST", "/graphql", {"json": {"query": "{ nope }"}}, 400, "Cannot query field"),
    ("POST", "/graphql", {"json": {"query": "{ products(first: 1000) { totalCount } }"}}, 400,
     "first must be between"),
    ("POST", "/graphql", {"json": {"query": '{ products(after: "bogus") { totalCount } }'}}, 400,
     "not one this API returned"),
    ("POST", "/graphql", {"json": {"query": '{ searchByText(query: "") { mode } }'}}, 422,
     "query: String should have at least 1 character"),
    ("POST", "/graphql", {"json": {"query": '{ searchByText(query: "a", k: 0) { mode } }'}}, 422,
     "k: Input should be greater than or equal to 1"),
    ("POST", "/graphql",
     {"json": {"query": "{ " + " ".join(f"a{i}: product(id: \"1\") {{ id }}" for i in range(12))
               + " }"}}, 400, "aliases"),
    ("POST", "/graphql", {"json": {"query": "{ products { edges { node { id } } } "
                                   + "a: __typename " * 600 + "}"}}, 400, "token"),
    ("POST", "/graphql", {"json": {"query": '{ product(id: "15970") { similar { product {'
                                   " similar { product { similar { product { id } } } } } } } }"}},
     400, "exceeds maximum operation depth"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "message"), BAD_REQUESTS)
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    api: TestClient, pool: ConnectionPool, method: str, path: str,
    kwargs: dict[str, Any], status: int, message: str,
) -> None:  # fmt: skip
    before = catalog_digest(pool)
    response = api.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.text
    assert catalog_digest(pool) == before


#: Bad values of a search request, as REST query parameters and as GraphQL arguments.
BAD_SEARCH_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"q": ""}, 'query: ""'),
    ({"q": "   "}, 'query: "   "'),
    ({"q": "x" * 2001}, f'query: "{"x" * 2001}"'),
    ({"q": "-red"}, 'query: "-red"'),
    ({"q": "a\x00b"}, 'query: "a\\u0000b"'),
    ({"q": "shirt", "k": 0}, 'query: "shirt", k: 0'),
    ({"q": "shirt", "k": 101}, 'query: "shirt", k: 101'),
    ({"q": "shirt", "mode": "fuzzy"}, 'query: "shirt", mode: "fuzzy"'),
    ({"q": "shirt", "minScore": 2}, 'query: "shirt", refine: {minScore: 2}'),
    ({"q": "shirt", "candidates": 0}, 'query: "shirt", refine: {candidates: 0}'),
    ({"q": "shirt", "collapse": "text"}, 'query: "shirt", refine: {collapse: "text"}'),
    ({"q": "shirt", "understand": "maybe"}, 'query: "shirt", refine: {understand: "maybe"}'),
]


@pytest.mark.parametrize(("params", "arguments"), BAD_SEARCH_VALUES)
def test_a_bad_search_value_gets_the_same_answer_over_rest_and_graphql(
    api: TestClient, params: dict[str, Any], arguments: str
) -> None:
    rest = api.get("/search/text", params=params)
    gql = graphql(api, f"{{ searchByText({arguments}) {{ mode }} }}")
    assert rest.status_code == gql.status_code == 422, (rest.text, gql.text)
    assert rest.json()["detail"] == gql.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    "text",
    ["'; DROP TABLE products; --", "shirt\" OR 1=1 --", "Navy % _ \\ blue", "连衣裙 👗 ñandú",
     "a:b & c | !d (e)"],
)  # fmt: skip
def test_sql_metacharacters_and_unicode_are_just_text(
    api: TestClient, pool: ConnectionPool, text: str
) -> None:
    before = catalog_digest(pool)
    for mode in ("vector", "hybrid"):
        response = api.get("/search/text", params={"q": text, "k": 3, "mode": mode})
        assert response.status_code == 200, response.text
        assert len(response.json()["hits"]) == 3
    filtered = api.get("/search/text", params={"q": "shirt", "articleType": text})
    assert filtered.status_code == 200 and filtered.json()["hits"] == []
    gql = graphql(api, "query($q: String!) { searchByText(query: $q, k: 2, mode: \"hybrid\")"
                       " { hits { score } } }", q=text)  # fmt: skip
    assert gql.status_code == 200 and len(gql.json()["data"]["searchByText"]["hits"]) == 2
    assert catalog_digest(pool) == before
