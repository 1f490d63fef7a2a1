"""Business signals in the ranking: popularity from recorded feedback, newness, and the
merchandising boost, weighted by settings, explained per hit through REST and GraphQL, and
refused when bad (nothing stored)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from fashion_search.catalog.models import Product
from fashion_search.catalog.signals import StoredSignals
from fashion_search.errors import InvalidArgumentError, ProductNotFoundError
from fashion_search.learning.feedback import Feedback
from fashion_search.search.ranking import Candidates, RankPlan, rank
from fashion_search.search.request import Refinements
from fashion_search.search.service import SearchService
from fashion_search.search.signals import POPULARITY_HALF, SignalWeights, contributions
from fashion_search.settings import REPO_ROOT, SignalSettings
from tests.helpers import api_client, child_env

QUERY = "navy blue shirt"
OFF = {"popularity_weight": 0.0, "newness_weight": 0.0, "boost_weight": 0.0}


def _product(id: int, created_at: datetime) -> Product:
    return Product(id=id, product_display_name="p", image_key="a.jpg", created_at=created_at)


def test_each_signal_is_bounded_and_weighted() -> None:
    now = datetime.now(UTC)
    products = [_product(1, now), _product(2, now - timedelta(days=30)), _product(3, now)]
    stored = {1: StoredSignals(POPULARITY_HALF, 1.0), 2: StoredSignals(1e9, -1.0)}
    weights = SignalWeights(0.1, 0.2, 0.3, 7 * 86_400, 30 * 86_400)
    found = contributions(products, stored, weights, now)
    assert found["popularity"] == pytest.approx([0.05, 0.1, 0.0])  # half at POPULARITY_HALF
    assert found["newness"] == pytest.approx([0.2, 0.1, 0.2])  # halved after a half-life
    assert found["boost"] == pytest.approx([0.3, -0.3, 0.0])
    off = SignalWeights.of(SignalSettings(**OFF))
    assert not off.on and contributions(products, stored, off, now) == {}


def test_at_the_default_weights_signals_only_reorder_near_equals() -> None:
    """Random signals at the default weights: a candidate passes another only when their
    relevance differs by less than the weights' sum (the boost's twice: it goes from -1 to 1)."""
    weights = SignalWeights.of(SignalSettings())
    reach = weights.popularity + weights.newness + 2 * weights.boost
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    for _ in range(50):
        n = 40
        similarity = rng.uniform(0.0, 1.0, n)
        products = [_product(i + 1, now - timedelta(days=float(rng.uniform(0, 400))))
                    for i in range(n)]  # fmt: skip
        stored = {i + 1: StoredSignals(float(rng.exponential(20)), float(rng.uniform(-1, 1)))
                  for i in range(n)}  # fmt: skip
        candidates = Candidates(
            ids=np.arange(1, n + 1), similarity=similarity, titled=np.zeros(n, bool),
            title=np.zeros(n), named=np.zeros(n, np.int64), understood=0,
            signals=contributions(products, stored, weights, now),
        )  # fmt: skip
        order = rank(candidates, RankPlan(n, 0.5, 0.5, None)).kept
        ranked = similarity[order]
        for i in range(n):
            assert np.all(ranked[i + 1 :] < ranked[i] + reach)


@pytest.fixture
def clicks(search_service: SearchService) -> Iterator[list[Feedback]]:
    """Feedback recorded by a test (deleted after, with any boost it set)."""
    recorded: list[Feedback] = []
    yield recorded
    with search_service.catalog.pool.connection() as conn:
        conn.execute(
            "DELETE FROM feedback WHERE session_id = ANY(%s)", ([f.session_id for f in recorded],)
        )
        conn.execute("DELETE FROM product_boosts WHERE set_by = 'test'")


def _service(search_service: SearchService, **signals: float) -> SearchService:
    return search_service.reconfigured(search_service.settings.replace(signals={**OFF, **signals}))


def test_clicks_and_a_boost_lift_a_product_and_explain_says_by_how_much(
    search_service: SearchService, clicks: list[Feedback]
) -> None:
    refine = Refinements(min_score=-1.0, understand="off", explain=True)
    plain = _service(search_service).text(QUERY, 10, mode="vector", refine=refine)
    target = plain.hits[5].product.id
    assert set(plain.hits[0].explain or {}) == {"similarity", "understanding"}
    signals = search_service.catalog.signals
    before = signals.of([target], 7 * 86_400).get(target, StoredSignals(0.0, 0.0)).popularity
    session = f"test-{uuid.uuid4().hex}"
    for signal in ("click", "click", *["add_to_cart"] * 100):  # 1 + 1 + 100 x 3 = 302
        clicks.append(Feedback(signal=signal, query=QUERY, product_id=target, position=6,
                               session_id=session))  # fmt: skip
        search_service.catalog.feedback.record(clicks[-1])
    # Weight 10: popularity 9.84 outweighs any similarity gap (at most 2) and the popularity of
    # products other tests clicked (16 signals would give 7.62).
    popular = _service(search_service, popularity_weight=10.0)
    hits = popular.text(QUERY, 10, mode="vector", refine=refine).hits
    assert hits[0].product.id == target
    stored = signals.of([h.product.id for h in hits], 7 * 86_400)
    for hit in hits:  # seconds-old signals: not decayed yet
        count = stored[hit.product.id].popularity if hit.product.id in stored else 0.0
        expected = 10 * count / (count + 5)
        assert (hit.explain or {})["popularity"] == pytest.approx(expected, abs=1e-5)
        assert hit.score == pytest.approx(sum((hit.explain or {}).values()), abs=1e-6)
    assert stored[target].popularity == pytest.approx(before + 302, abs=1e-2)

    search_service.catalog.signals.set_boost(target, -1.0, "test")
    buried = _service(search_service, boost_weight=2.0).text(QUERY, 10, refine=refine).hits
    assert target not in {h.product.id for h in buried}, [h.explain for h in buried]
    boosts = {b.product_id: b for b in search_service.catalog.signals.boosts()}
    assert (boosts[target].boost, boosts[target].set_by) == (-1.0, "test")


def test_newness_favours_what_entered_the_catalog_later(search_service: SearchService) -> None:
    refine = Refinements(min_score=-1.0, understand="off", explain=True)
    service = _service(search_service, newness_weight=0.5)
    hits = service.text(QUERY, 10, mode="vector", refine=refine).hits
    now = datetime.now(UTC)
    for hit in hits:
        age_s = (now - hit.product.created_at).total_seconds()  # type: ignore[operator]
        assert (hit.explain or {})["newness"] == pytest.approx(
            0.5 * 0.5 ** (age_s / (30 * 86_400)), abs=1e-4
        )


def test_rest_and_graphql_explain_each_hit_only_when_asked(search_service: SearchService) -> None:
    defaults = SignalSettings().model_dump(include=set(OFF))
    with api_client(_service(search_service, **{**defaults, "newness_weight": 0.01})) as api:
        plain = api.get("/search/text", params={"q": QUERY, "k": 3}).json()["hits"]
        assert all(h["explain"] is None for h in plain)
        hits = api.get("/search/text", params={"q": QUERY, "k": 3, "explain": "true"}).json()
        for hit in hits["hits"]:
            assert hit["score"] == pytest.approx(sum(hit["explain"].values()), abs=1e-4)
            assert hit["explain"]["newness"] > 0
        body = api.post("/search/text", json={"q": QUERY, "k": 3, "explain": True}).json()
        assert [h["explain"] for h in body["hits"]] == [h["explain"] for h in hits["hits"]]
        answer = api.post(
            "/graphql",
            json={
                "query": """{ searchByText(query: "navy blue shirt",
            k: 3, refine: {explain: true}) { hits { score explain { name value } } } }"""
            },
        )
        data: dict[str, Any] = answer.json()
        assert not data.get("errors"), data
        for hit in data["data"]["searchByText"]["hits"]:
            parts = {p["name"]: p["value"] for p in hit["explain"]}
            assert hit["score"] == pytest.approx(sum(parts.values()), abs=1e-4)
        assert api.get("/search/text", params={"q": QUERY, "explain": "maybe"}).status_code == 422


def test_a_bad_boost_is_refused_and_nothing_is_stored(
    search_service: SearchService, clicks: list[Feedback]
) -> None:
    signals = search_service.catalog.signals
    product = search_service.catalog.products.list_products(limit=1).items[0].id
    before = signals.boosts()
    for bad in (1.5, -2.0, float("nan"), float("inf")):
        with pytest.raises(InvalidArgumentError):
            signals.set_boost(product, bad, "test")
    with pytest.raises(ProductNotFoundError):
        signals.set_boost(999_999_999, 0.5, "test")
    assert signals.boosts() == before
    env = child_env(search_service.settings)
    cli = [sys.executable, "-m", "fashion_search.cli"]
    refused = subprocess.run([*cli, "boosts", "set", str(product), "3"], env=env, cwd=REPO_ROOT,
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert refused.returncode != 0 and "a boost is from -1.0 to 1.0" in refused.stderr
    done = subprocess.run([*cli, "boosts", "set", str(product), "0.5", "--by", "test"], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    assert f"product {product}: boost +0.50 (by test)" in done.stdout
    assert signals.boosts()[0].product_id == product
