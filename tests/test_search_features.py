"""Search features against the real catalog and a served tiny CLIP, through REST and GraphQL:
facet counts, the relevance cutoff, weighted and negative terms, composed image + text queries,
query understanding, collapse of identical images and suggestions; bad input answered 4xx with
the catalog unchanged."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from fashion_search.catalog.vote import vote
from fashion_search.search.service import MODIFIER_WEIGHT, SearchService
from fashion_search.search.terms import NEGATIVE_WEIGHT, combine
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore, product_image_key
from tests.helpers import api_client, catalog_digest


@pytest.fixture(scope="module")
def service(search_service: SearchService) -> SearchService:
    return search_service


@pytest.fixture(scope="module")
def pool(service: SearchService) -> ConnectionPool:
    return service.catalog.pool


@pytest.fixture(scope="module")
def api(service: SearchService) -> Iterator[TestClient]:
    with api_client(service) as client:
        client.raise_server_exceptions = True  # a 500 fails with its traceback
        yield client


def graphql(api: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    response = api.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]  # type: ignore[no-any-return]


def graphql_error(api: TestClient, query: str, **variables: Any) -> str:
    response = api.post("/graphql", json={"query": query, "variables": variables})
    assert 400 <= response.status_code < 500, response.text
    return str(response.json()["errors"][0]["message"])


def text_vector(service: SearchService, *texts: str) -> np.ndarray[Any, Any]:
    return service.embedder.embed_texts(list(texts)).vectors


def nearest_ids(
    service: SearchService, vector: np.ndarray[Any, Any], k: int, **kw: Any
) -> list[int]:
    serving = service.catalog.versions.serving()
    return [
        n.product.id for n in service.catalog.vectors.nearest(serving, vector, k, **kw).neighbors
    ]


def ids(body: dict[str, Any]) -> list[int]:
    return [int(h["id"] if "id" in h else h["product"]["id"]) for h in body["hits"]]


# --- facets -------------------------------------------------------------------------------------


def assert_parts(hit: dict[str, Any], **expected: float) -> None:
    """The hit's score is the sum of its explained parts, similarity is its similarity, and
    each part of ``expected`` is as given."""
    parts = hit["explain"]
    assert hit["score"] == pytest.approx(sum(parts.values()), abs=1e-4)
    assert parts["similarity"] == pytest.approx(hit["similarity"], abs=1e-4)
    for name, value in expected.items():
        assert parts[name] == pytest.approx(value, abs=1e-4), name


def test_search_facets_count_the_ranked_candidates(api: TestClient, service: SearchService) -> None:
    query = "black shoes for men"
    body = api.get("/search/text", params={"q": query, "mode": "vector", "facets": "true",
                                           "candidates": 60, "k": 5,
                                           "understand": "off"}).json()  # fmt: skip
    serving = service.catalog.versions.serving()
    pool = service.catalog.vectors.nearest(serving, text_vector(service, query)[0], 60).neighbors
    expected = Counter(n.product.article_type for n in pool)
    got = {f["value"]: f["count"] for f in body["facets"]["articleType"]}
    assert got == dict(expected)
    assert sum(f["count"] for f in body["facets"]["gender"]) == 60
    counts = [f["count"] for f in body["facets"]["articleType"]]
    assert counts == sorted(counts, reverse=True)
    assert len(body["hits"]) == 5
    assert api.get("/search/text", params={"q": query}).json()["facets"] is None

    data = graphql(api, """query($q: String!) { searchByText(query: $q, mode: "vector",
        refine: {facets: true, candidates: 60, understand: "off"}) {
        facets { field values { value count } } } }""",
        q=query)  # fmt: skip
    facets = {f["field"]: f["values"] for f in data["searchByText"]["facets"]}
    assert {v["value"]: v["count"] for v in facets["articleType"]} == dict(expected)


def test_facet_counts_of_a_listing_count_every_matching_product(
    api: TestClient, pool: ConnectionPool
) -> None:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT article_type, count(*) FROM products WHERE gender = 'Men' GROUP BY 1"
        ).fetchall()
    body = api.get("/facets/counts", params={"gender": "Men"})
    assert body.status_code == 200, body.text
    assert {f["value"]: f["count"] for f in body.json()["articleType"]} == dict(rows)
    assert body.json()["gender"] == [{"value": "Men", "count": sum(n for _, n in rows)}]
    data = graphql(
        api, '{ facetCounts(filter: {gender: ["Men"]}) { field values { value count } } }'
    )
    facets = {f["field"]: f["values"] for f in data["facetCounts"]}
    assert {v["value"]: v["count"] for v in facets["articleType"]} == dict(rows)
    assert api.get("/facets/counts", params={"colour": "Red"}).status_code == 400


# --- relevance cutoff ---------------------------------------------------------------------------


def test_min_score_cuts_weak_hits_and_says_how_many(api: TestClient) -> None:
    base = {"q": "red dress", "mode": "vector", "k": 50, "candidates": 50, "understand": "off"}
    scores = [h["similarity"] for h in api.get("/search/text", params=base).json()["hits"]]
    cutoff = float(np.median(scores))
    body = api.get("/search/text", params={**base, "minScore": cutoff}).json()
    kept = [h["similarity"] for h in body["hits"]]
    assert kept == [s for s in scores if s >= cutoff] and 0 < len(kept) < 50
    assert body["cut"] == 50 - len(kept)
    data = graphql(
        api,
        """query($m: Float!) { searchByText(query: "red dress", k: 50,
        mode: "vector", refine: {minScore: $m, understand: "off"}) { cut hits { similarity } } }""",
        m=cutoff,
    )
    assert data["searchByText"]["cut"] == body["cut"]
    assert [h["similarity"] for h in data["searchByText"]["hits"]] == pytest.approx(kept)


def test_a_query_nothing_passes_gets_the_nearest_marked_below_the_cutoff(api: TestClient) -> None:
    base = {"q": "red dress", "mode": "vector", "k": 5, "understand": "off"}
    nearest = api.get("/search/text", params={**base, "minScore": -1}).json()
    assert nearest["belowCutoff"] is False and nearest["minScore"] == -1
    body = api.get("/search/text", params={**base, "minScore": 1}).json()  # no text is an image
    assert body["belowCutoff"] is True and body["minScore"] == 1 and body["cut"] == 0
    assert ids(body) == ids(nearest) and len(body["hits"]) == 5  # no empty page
    posted = api.post("/search/text", json={**base, "minScore": 1}).json()
    assert posted["belowCutoff"] is True and ids(posted) == ids(nearest)
    data = graphql(api, """{ searchByText(query: "red dress", k: 5, mode: "vector",
        refine: {minScore: 1, understand: "off"}) { belowCutoff minScore cut
        hits { product { id } } } }""")  # fmt: skip
    found = data["searchByText"]
    assert found["belowCutoff"] is True and found["minScore"] == 1 and found["cut"] == 0
    assert ids(found) == ids(nearest)


def test_a_version_is_calibrated_on_the_judged_queries_and_searches_use_its_cutoff(
    service: SearchService, search_settings: Settings
) -> None:
    from fashion_search.learning.calibration import KEEP_RELEVANT, calibrate
    from fashion_search.learning.judged_queries import judged_queries
    from fashion_search.search.request import Refinements

    version = service.catalog.versions.serving()
    calibrated = calibrate(search_settings, service.catalog, service.embedder, version)
    cutoff = calibrated.min_score
    assert cutoff is not None and service.catalog.versions.serving().min_score == cutoff
    relevant = [
        h.similarity
        for q in judged_queries()
        for h in service.text(q.text, 10, refine=Refinements(min_score=-1.0)).hits
        if q.relevant(h.product) and h.similarity is not None
    ]
    kept = sum(s >= cutoff for s in relevant) / len(relevant)
    assert KEEP_RELEVANT <= kept < 1.0 or cutoff == -1.0, (cutoff, kept)
    by_default = SearchService(search_settings.replace(search={"min_score": None}),
                               service.catalog, service.store, service.embedder)  # fmt: skip
    result = by_default.text("red dress", 10, mode="vector", refine=Refinements(understand="off"))
    assert result.min_score == cutoff
    assert all(h.similarity is not None and h.similarity >= cutoff for h in result.hits) or (
        result.below_cutoff
    )


# --- weighted and negative terms ----------------------------------------------------------------


def test_negative_terms_push_the_query_away_in_embedding_space(
    api: TestClient, service: SearchService
) -> None:
    vectors = text_vector(service, "casual shirt", "blue")
    expected = nearest_ids(service, combine(vectors, [1.0, NEGATIVE_WEIGHT]), 10)
    off = {"mode": "vector", "understand": "off"}
    got = ids(api.get("/search/text", params={"q": "casual shirt -blue", **off}).json())
    assert got == expected
    assert got != nearest_ids(service, vectors[0], 10)
    weighted = [{"text": "casual shirt", "weight": 1}, {"text": "blue", "weight": NEGATIVE_WEIGHT}]
    posted = api.post("/search/text", json={"q": weighted, **off})
    assert posted.status_code == 200, posted.text
    assert ids(posted.json()) == expected
    data = graphql(api, """query($t: [TermInput!]!) { searchByText(terms: $t, mode: "vector",
        refine: {understand: "off"}) { hits { product { id } } } }""", t=weighted)  # fmt: skip
    assert ids(data["searchByText"]) == expected


def test_a_negative_term_demotes_title_matches_in_hybrid_mode(service: SearchService) -> None:
    matches = service.catalog.vectors.title_match_ids("shirt", 300)
    without_blue = service.catalog.vectors.title_match_ids("shirt", 300, excluded=["blue"])
    blue = {p for p, _ in matches} - {p for p, _ in without_blue}
    assert blue and without_blue, "the test catalog has blue shirts and others"
    titles = {p.id: p.product_display_name for p in service.catalog.products.get_many(list(blue))}
    assert all("blue" in t.lower() for t in titles.values())
    hybrid = service.text("shirt -blue", k=20, mode="hybrid")
    plain = service.text("shirt", k=20, mode="hybrid")
    assert not blue & {h.product.id for h in hybrid.hits[:5]}
    assert blue & {h.product.id for h in plain.hits}


@pytest.mark.parametrize(
    "terms",
    [
        [{"text": "shirt", "weight": "x"}],
        [{"text": "shirt", "weight": True}],
        [{"text": "shirt", "weight": 1e9}],
        [{"text": "shirt", "weight": -1}],
        [{"text": "shirt", "weight": 1}, {"text": "", "weight": -1}],
        [],
    ],
)
def test_bad_weights_are_refused(api: TestClient, pool: ConnectionPool, terms: Any) -> None:
    before = catalog_digest(pool)
    response = api.post("/search/text", json={"q": terms})
    assert response.status_code in (400, 422), response.text
    assert catalog_digest(pool) == before


def test_bad_weights_are_refused_in_graphql(api: TestClient) -> None:
    query = "query($t: [TermInput!]!) { searchByText(terms: $t) { cut } }"
    assert "Float" in graphql_error(api, query, t=[{"text": "shirt", "weight": "x"}])
    assert "positive weight" in graphql_error(api, query, t=[{"text": "shirt", "weight": -1.0}])
    assert "cancel" in graphql_error(
        api, query, t=[{"text": "shirt", "weight": 1.0}, {"text": "shirt", "weight": -1.0}]
    )
    assert "exactly one" in graphql_error(
        api, '{ searchByText(query: "a", terms: [{text: "b"}]) { cut } }'
    )
    assert "at least 1 item" in graphql_error(api, "{ searchByText(terms: []) { cut } }")
    assert "minScore: Input should be greater than or equal to -1" in graphql_error(
        api, '{ searchByText(query: "shirt", refine: {minScore: -2}) { cut } }'
    )


# --- composed image + text ----------------------------------------------------------------------


def test_a_product_and_a_modifier_compose_in_embedding_space(
    api: TestClient, service: SearchService
) -> None:
    product_id = service.catalog.products.list_products(limit=1).items[0].id
    serving = service.catalog.versions.serving()
    image = service.catalog.products.get(product_id, serving).embedding
    assert image is not None
    modifier = text_vector(service, "in red")[0]
    expected = nearest_ids(
        service, combine(np.stack([image, modifier]), [1.0, MODIFIER_WEIGHT]), 10,
        exclude_id=product_id,
    )  # fmt: skip
    assert expected != nearest_ids(service, image, 10, exclude_id=product_id)
    got = api.post("/search/image", json={"productId": product_id, "modifier": "in red",
                                          "understand": "off"})  # fmt: skip
    assert got.status_code == 200, got.text
    assert ids(got.json()) == expected
    similar = api.get(f"/products/{product_id}/similar",
                      params={"modifier": "in red", "understand": "off"}).json()  # fmt: skip
    assert ids(similar) == expected
    data = graphql(api, """query($id: ID!) { searchSimilar(id: $id, modifier: "in red",
        refine: {understand: "off"}) { hits { product { id } } } }""",
        id=str(product_id))  # fmt: skip
    assert ids(data["searchSimilar"]) == expected


def test_a_composed_query_keeps_what_the_image_shows_unless_the_modifier_says_otherwise(
    api: TestClient, service: SearchService, search_settings: Settings
) -> None:
    product = service.catalog.products.list_products(limit=1).items[0]
    colour = "Red" if product.base_colour != "Red" else "Blue"
    asked = {"modifier": f"in {colour.lower()}", "understand": "boost", "explain": "true"}
    body = api.get(f"/products/{product.id}/similar", params=asked).json()
    assert body["understood"] == {"gender": product.gender, "articleType": product.article_type,
                                  "baseColour": colour}  # fmt: skip
    boost = search_settings.search.understanding_boost
    for hit in body["hits"]:
        named = sum(hit[f] == v for f, v in body["understood"].items())
        assert_parts(hit, understanding=boost * named)

    image = ObjectStore(search_settings).get(
        search_settings.storage.images_bucket, product_image_key(product.id)
    )
    serving = service.catalog.versions.serving()
    vector = service.embedder.embed_images([image]).vectors[0]
    (near,) = service.catalog.vectors.labelled_neighbours(serving, [vector], 10)
    voted = vote([n.product for n in near], [n.score for n in near], ("gender", "article_type"))
    form = api.post("/search/image", files={"image": ("p.jpg", image, "image/jpeg")},
                    data={"modifier": "with a logo", "understand": "boost"}).json()  # fmt: skip
    assert form["understood"]["articleType"] == voted["article_type"].value
    assert form["understood"]["gender"] == voted["gender"].value


def test_an_uploaded_image_and_a_modifier_compose(
    api: TestClient, service: SearchService, search_settings: Settings
) -> None:
    product_id = service.catalog.products.list_products(limit=1).items[0].id
    image = ObjectStore(search_settings).get(
        search_settings.storage.images_bucket, product_image_key(product_id)
    )
    vectors = np.stack([service.embedder.embed_images([image]).vectors[0],
                        text_vector(service, "in blue")[0]])  # fmt: skip
    expected = nearest_ids(service, combine(vectors, [1.0, MODIFIER_WEIGHT]), 10)
    off = {"understand": "off"}
    form = api.post("/search/image", files={"image": ("p.jpg", image, "image/jpeg")},
                    data={"modifier": "in blue", **off})  # fmt: skip
    assert form.status_code == 200, form.text
    assert ids(form.json()) == expected
    encoded = base64.b64encode(image).decode()
    posted = api.post("/search/image", json={"imageBase64": encoded, "modifier": "in blue", **off})
    assert ids(posted.json()) == expected
    data = graphql(api, """query($i: String!) { searchByImage(imageBase64: $i, modifier: "in blue",
        refine: {understand: "off"}) { hits { product { id } } } }""", i=encoded)  # fmt: skip
    assert ids(data["searchByImage"]) == expected
    plain = api.post("/search/image", files={"image": ("p.jpg", image, "image/jpeg")}).json()
    assert ids(plain) != expected


@pytest.mark.parametrize("modifier", ["", "   "])
def test_an_empty_modifier_is_refused(
    api: TestClient, service: SearchService, pool: ConnectionPool, modifier: str
) -> None:
    product_id = service.catalog.products.list_products(limit=1).items[0].id
    before = catalog_digest(pool)
    posted = api.post("/search/image", json={"productId": product_id, "modifier": modifier})
    assert posted.status_code in (400, 422) and "modifier" in posted.text, posted.text
    got = api.get(f"/products/{product_id}/similar", params={"modifier": modifier})
    assert got.status_code in (400, 422), got.text
    form = api.post("/search/image", files={"image": ("p.jpg", b"x", "image/jpeg")},
                    data={"modifier": modifier})  # fmt: skip
    assert form.status_code in (400, 422), form.text
    message = graphql_error(
        api, 'query($id: ID!, $m: String!) { searchSimilar(id: $id, modifier: $m) { cut } }',
        id=str(product_id), m=modifier,
    )  # fmt: skip
    assert "modifier" in message
    assert catalog_digest(pool) == before


# --- query understanding ------------------------------------------------------------------------


def test_the_response_says_what_the_query_names(api: TestClient) -> None:
    for understand in ("boost", "filter"):
        body = api.get("/search/text", params={"q": "navy blue t-shirts for mens",
                                               "understand": understand}).json()  # fmt: skip
        assert body["understood"] == {"baseColour": "Navy Blue", "articleType": "Tshirts",
                                      "gender": "Men"}  # fmt: skip
    off = api.get("/search/text", params={"q": "navy blue tshirt", "understand": "off"}).json()
    assert off["understood"] == {}
    data = graphql(api, """{ searchByText(query: "black tee", refine: {understand: "boost"})
        { understood { field value } } }""")  # fmt: skip
    understood = {u["field"]: u["value"] for u in data["searchByText"]["understood"]}
    assert understood == {"baseColour": "Black", "articleType": "Tshirts"}


@pytest.mark.parametrize(
    ("query", "understood"),
    [
        ("sneakers for guys", {"articleType": ["Casual Shoes", "Sports Shoes"], "gender": "Men"}),
        ("office shirt for men", {"usage": "Formal", "articleType": "Shirts", "gender": "Men"}),
        ("summer tee", {"season": "Summer", "articleType": "Tshirts"}),
        ("blak tshrit", {"baseColour": "Black", "articleType": "Tshirts"}),
        ("camiseta negra para mujer", {"articleType": "Tshirts", "baseColour": "Black",
                                       "gender": "Women"}),
    ],
)  # fmt: skip
def test_shoppers_words_synonyms_occasions_typos_and_spanish_are_understood(
    api: TestClient, query: str, understood: dict[str, Any]
) -> None:
    boosted = api.get("/search/text", params={"q": query}).json()
    assert boosted["understood"] == understood and boosted["hits"]
    body = api.get("/search/text", params={"q": query, "understand": "filter"}).json()
    assert body["understood"] == understood and body["hits"], body
    for hit in body["hits"]:
        for field, value in understood.items():
            assert hit[field] in ([value] if isinstance(value, str) else value), (hit, field)
    data = graphql(api, """query($q: String!) { searchByText(query: $q) {
        understood { field value } } }""", q=query)  # fmt: skip
    pairs = {(u["field"], u["value"]) for u in data["searchByText"]["understood"]}
    assert pairs == {(f, v) for f, vs in understood.items()
                     for v in ([vs] if isinstance(vs, str) else vs)}  # fmt: skip


def test_understanding_boosts_softly_and_filters_when_asked(
    api: TestClient, service: SearchService
) -> None:
    query = {"q": "black shirts", "mode": "vector", "k": 10, "candidates": 300, "explain": True}
    plain = api.get("/search/text", params={**query, "understand": "off"}).json()["hits"]
    boosted = api.get("/search/text", params={**query, "understand": "boost"}).json()["hits"]
    filtered = api.get("/search/text", params={**query, "understand": "filter"}).json()["hits"]

    def matches(hits: list[dict[str, Any]]) -> int:
        return sum(h["baseColour"] == "Black" and h["articleType"] == "Shirts" for h in hits)

    assert matches(boosted) > matches(plain)
    assert all(h["baseColour"] == "Black" and h["articleType"] == "Shirts" for h in filtered)
    assert len(boosted) == 10 and any(  # soft: other products stay in the ranking
        h["articleType"] != "Shirts" or h["baseColour"] != "Black" for h in boosted
    ) == (matches(boosted) < 10)
    boost = service.settings.search.understanding_boost
    for hit in boosted:
        named = (hit["baseColour"] == "Black") + (hit["articleType"] == "Shirts")
        assert_parts(hit, understanding=boost * named)


@pytest.mark.parametrize(
    ("parameters", "word"),
    [
        ({"understand": "maybe"}, "understand"),
        ({"collapse": "title"}, "collapse"),
        ({"minScore": -2}, "minScore"),
        ({"minScore": "nan"}, "minScore"),
        ({"minScore": "x"}, "minScore"),
        ({"candidates": 0}, "candidates"),
        ({"candidates": 100_000}, "candidates"),
    ],
)
def test_bad_refinements_are_refused(
    api: TestClient, pool: ConnectionPool, parameters: dict[str, Any], word: str
) -> None:
    before = catalog_digest(pool)
    got = api.get("/search/text", params={"q": "shirt", **parameters})
    assert got.status_code == 422 and word in got.text, got.text
    posted = api.post("/search/text", json={"q": "shirt", **parameters})
    assert posted.status_code == 422 and word in posted.text, posted.text
    form = api.post("/search/image", files={"image": ("p.jpg", b"x", "image/jpeg")},
                    data={k: str(v) for k, v in parameters.items()})  # fmt: skip
    assert form.status_code in (400, 422), form.text
    assert catalog_digest(pool) == before


def test_bad_refinements_are_refused_in_graphql(api: TestClient) -> None:
    refinements = {'{understand: "maybe"}': "understand", '{collapse: "x"}': "collapse",
                   "{minScore: 1.5}": "minScore", "{candidates: 0}": "candidates"}  # fmt: skip
    for refine, word in refinements.items():
        message = graphql_error(api, f'{{ searchByText(query: "a", refine: {refine}) {{ cut }} }}')
        assert word in message, message


# --- collapse -----------------------------------------------------------------------------------


@pytest.fixture
def duplicated(service: SearchService) -> Iterator[tuple[int, list[int]]]:
    """A product listed twice more under new ids (the same image, fingerprint and embedding),
    as the dataset lists some; removed after."""
    serving = service.catalog.versions.serving()
    original = service.catalog.products.list_products(limit=1).items[0]
    stored = service.catalog.products.get(original.id, serving)
    assert stored.image_fingerprint is not None and stored.embedding is not None
    copies = [stored.model_copy(update={"id": 900_000 + n}) for n in (1, 2)]
    service.catalog.products.upsert_many(copies)
    service.catalog.embeddings.set_embeddings(
        serving.model_version, [c.id for c in copies], np.stack([stored.embedding] * 2)
    )
    yield original.id, [c.id for c in copies]
    service.catalog.products.delete([c.id for c in copies])


def test_collapse_keeps_one_hit_per_identical_image(
    api: TestClient, search_settings: Settings, duplicated: tuple[int, list[int]]
) -> None:
    original, copies = duplicated
    group = {original, *copies}
    image = ObjectStore(search_settings).get(
        search_settings.storage.images_bucket, product_image_key(original)
    )
    upload = {"image": ("p.jpg", image, "image/jpeg")}
    plain = api.post("/search/image", files=upload, data={"k": "10"}).json()
    assert set(ids(plain)[:3]) == group
    collapsed = api.post("/search/image", files=upload, data={"collapse": "image"}).json()
    kept = [h for h in collapsed["hits"] if h["id"] in group]
    assert len(kept) == 1 and kept[0]["collapsed"] == 3
    assert all(h["collapsed"] == 1 for h in collapsed["hits"] if h["id"] not in group)
    assert ids(collapsed)[1:] == ids(plain)[3:] + ids(collapsed)[8:]
    data = graphql(api, """query($i: String!) { searchByImage(imageBase64: $i,
        refine: {collapse: "image"}) { hits { collapsed product { id } } } }""",
        i=base64.b64encode(image).decode())  # fmt: skip
    hits = data["searchByImage"]["hits"]
    assert [h["collapsed"] for h in hits if int(h["product"]["id"]) in group] == [3]


def test_every_product_has_an_image_fingerprint(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*), count(image_fingerprint), min(length(image_fingerprint))"
            " FROM products"
        ).fetchone()
    assert row is not None and row[0] == row[1] and row[2] == 192


# --- suggestions --------------------------------------------------------------------------------


def test_suggestions_complete_a_prefix_from_values_and_titles(api: TestClient) -> None:
    got = api.get("/suggest", params={"prefix": "Sh"})
    assert got.status_code == 200, got.text
    suggestions = got.json()
    assert {"text": "Shirts", "kind": "articleType"} in suggestions
    assert all(s["text"].lower().startswith("sh") for s in suggestions)
    kinds = [s["kind"] == "title" for s in suggestions]
    assert kinds == sorted(kinds)  # attribute values first
    titles = api.get("/suggest", params={"prefix": "puma", "limit": 3}).json()
    assert len(titles) == 3 and all(s["text"].lower().startswith("puma") for s in titles)
    data = graphql(api, '{ suggest(prefix: "sh", limit: 20) { text kind } }')
    assert {"text": "Shirts", "kind": "articleType"} in data["suggest"]


def test_suggestions_forgive_one_typo(api: TestClient) -> None:
    for typo, meant in (("shrts", "Shirts"), ("wtches", "Watches"), ("whatches", "Watches")):
        texts = [s["text"] for s in api.get("/suggest", params={"prefix": typo}).json()]
        assert meant in texts, (typo, texts)
    assert api.get("/suggest", params={"prefix": "qqqqzzzz"}).json() == []


@pytest.mark.parametrize(
    "params",
    [
        {"prefix": "s" * 1000},
        {"prefix": ""},
        {"prefix": "sh", "limit": 0},
        {"prefix": "sh", "limit": 21},
        {"prefix": "a\x00b"},
        {},
    ],
)
def test_bad_prefixes_are_refused(
    api: TestClient, pool: ConnectionPool, params: dict[str, Any]
) -> None:
    before = catalog_digest(pool)
    got = api.get("/suggest", params=params)
    assert got.status_code == 422, got.text
    assert catalog_digest(pool) == before


def test_bad_prefixes_are_refused_in_graphql(api: TestClient) -> None:
    query = "query($p: String!, $n: Int!) { suggest(prefix: $p, limit: $n) { text } }"
    assert "prefix" in graphql_error(api, query, p="s" * 1000, n=5)
    assert "limit" in graphql_error(api, query, p="sh", n=0)
