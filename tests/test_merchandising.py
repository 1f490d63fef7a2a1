"""Merchandising. Business signals in the ranking: popularity from recorded feedback, newness,
and the merchandising boost, weighted by settings, explained per hit through REST and GraphQL.
Rules (pin, hide, boost, bury, redirect) and synonym sets: matched and applied in the ranking,
managed by the CLI, REST and GraphQL, seen by another process within seconds. One result per
style, its other colours as variants. Bad input is refused with nothing stored."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from fashion_search.catalog.models import Product
from fashion_search.catalog.signals import StoredSignals
from fashion_search.errors import InvalidArgumentError, InvalidRequestError, ProductNotFoundError
from fashion_search.learning.feedback import Feedback
from fashion_search.search.merchandising import RULES_TTL_S, Merchandising, parse_entry
from fashion_search.search.ranking import Candidates, RankPlan, rank
from fashion_search.search.request import Refinements
from fashion_search.search.rules import Rule
from fashion_search.search.service import SearchResult, SearchService
from fashion_search.search.signals import POPULARITY_HALF, SignalWeights, contributions
from fashion_search.search.styles import colour_words, group_by_style, style_key
from fashion_search.search.synonyms import SynonymSet, check_sets
from fashion_search.search.understanding import Vocabulary
from fashion_search.search.words import words
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


# Rules and synonym sets.


RED = {"query": "red"}
BAD_ENTRIES: dict[str, dict[str, Any]] = {
    "no condition": {"when": {}, "then": {"hide": [1]}},
    "no consequence": {"when": RED, "then": {}},
    "two consequences": {"when": RED, "then": {"hide": [1], "redirect": {"gender": "Men"}}},
    "blank query": {"when": {"query": " - "}, "then": {"hide": [1]}},
    "unknown field": {"when": {"attributes": {"colour": "Red"}}, "then": {"hide": [1]}},
    "boost of nothing": {"when": RED, "then": {"boost": {"weight": 0.2}}},
    "boost too strong": {"when": RED, "then": {"boost": {"productIds": [1], "weight": 5}}},
    "pin twice": {"when": RED, "then": {"pin": [{"productId": 1, "position": p} for p in (1, 2)]}},
    "pin past k": {"when": RED, "then": {"pin": [{"productId": 1, "position": 101}]}},
    "empty redirect": {"when": RED, "then": {"redirect": {}}},
    "extra field": {"when": RED, "then": {"hide": [1]}, "priority": 3},
    "one two-way synonym": {"synonyms": ["jumper"]},
    "words alone": {"words": ["tee"]},
    "values without words": {"values": {"articleType": ["Tshirts"]}},
    "word and synonym": {"words": ["tee"], "synonyms": ["Tee"]},
}


@pytest.mark.parametrize("name", BAD_ENTRIES)
def test_a_bad_rule_or_synonym_set_is_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_entry(BAD_ENTRIES[name])


def test_a_rule_matches_its_query_understood_values_and_filters() -> None:
    rule = parse_entry({"when": {"query": "Red  Dress", "match": "contains"},
                        "then": {"hide": [1]}})  # fmt: skip
    assert isinstance(rule, Rule)
    assert rule.when.matches(words("long red dress"), {}, {})
    assert not rule.when.matches(words("red long dress"), {}, {})
    assert not rule.when.matches(None, {}, {})
    exact = parse_entry({"when": {"query": "red dress", "attributes": {"gender": "Women"}},
                         "then": {"hide": [1]}})  # fmt: skip
    assert isinstance(exact, Rule)
    assert exact.when.matches(words("RED dress!"), {"gender": ["Women", "Girls"]}, {})
    assert not exact.when.matches(words("red dress"), {"gender": "Men"}, {})
    assert not exact.when.matches(words("long red dress"), {"gender": "Women"}, {})


def test_synonym_sets_refuse_cycles_and_reuse_and_apply_in_understanding() -> None:
    def sets(*bodies: dict[str, Any]) -> list[SynonymSet]:
        return [SynonymSet.model_validate(b) for b in bodies]

    for cycle in (
        sets({"words": ["a"], "synonyms": ["b"]}, {"words": ["b"], "synonyms": ["c"]},
             {"words": ["c"], "synonyms": ["a"]}),
        sets({"synonyms": ["a", "b"]}, {"words": ["tee"], "synonyms": ["a", "Navy  Top"]},
             {"words": ["navy top"], "synonyms": ["TEE"]}),
    ):  # fmt: skip
        check_sets(cycle[:-1])
        with pytest.raises(InvalidArgumentError, match="cycle"):
            check_sets(cycle)
    with pytest.raises(InvalidArgumentError, match="already in another set"):
        check_sets(
            sets({"synonyms": ["jumper", "sweater"]}, {"words": ["Jumper"], "synonyms": ["top"]})
        )
    merchandised = sets(
        {"synonyms": ["jumper", "sweater"]},
        {"words": ["pullover"], "synonyms": ["jumper"]},
        {"words": ["zorblax"], "values": {"articleType": ["Tshirts"], "baseColour": ["Navy Blue"]}},
    )  # fmt: skip
    check_sets(merchandised)
    values = {"articleType": ["Sweaters", "Tshirts"], "baseColour": ["Navy Blue"]}
    vocabulary = Vocabulary.of(values, {"sweater": 40, "jumper": 2}, merchandised)
    assert vocabulary.rewrite("navy pullover") == "Navy Blue sweater"  # via jumper
    assert vocabulary.understand("a pullover") == {"articleType": "Sweaters"}
    assert vocabulary.understand("zorblax") == {"articleType": "Tshirts", "baseColour": "Navy Blue"}
    assert vocabulary.title_query("navy pullover for men") == (
        "Navy Blue for men",
        [["pullover", "jumper", "sweater"]],
    )
    assert vocabulary.title_query("sweater") == ("", [["sweater", "jumper"]])
    assert Vocabulary.of(values, {}).title_query("navy zorblax") == ("Navy Blue zorblax", [])


@pytest.fixture
def rules(search_service: SearchService) -> Iterator[Merchandising]:
    """The search service's rules, emptied after the test."""
    merchandising = search_service.merchandising
    yield merchandising
    for entry in merchandising.entries():
        merchandising.remove(entry.id)


def _ids(result: SearchResult) -> list[int]:
    return [h.product.id for h in result.hits]


def test_pin_hide_boost_bury_and_redirect_change_only_the_searches_they_match(
    search_service: SearchService, rules: Merchandising
) -> None:
    refine = Refinements(min_score=-1.0, understand="off", explain=True)
    plain = search_service.text(QUERY, 10, mode="vector", refine=refine)
    ids = _ids(plain)
    others = [p.id for p in search_service.catalog.products.list_products(limit=300).items
              if p.id not in ids]  # fmt: skip
    pinned, hidden, buried = others[0], ids[0], ids[1]
    when = {"query": QUERY}
    rules.add({"when": when, "then": {"pin": [{"productId": pinned, "position": 2}]}}, "test")
    rules.add({"when": when, "then": {"hide": [hidden]}}, "test")
    bury = rules.add({"when": when, "then": {"bury": {"productIds": [buried], "weight": 1}}}, "t")
    assert bury.created_by == "t" and bury.kind == "rule"
    ruled = search_service.text(QUERY, 10, mode="vector", refine=refine)
    assert _ids(ruled)[1] == pinned and (ruled.hits[1].explain or {}) == {"pinned": 2.0}
    assert hidden not in _ids(ruled) and buried not in _ids(ruled)
    assert len(ruled.hits) == 10 and len(ruled.rules) == 3
    assert _ids(ruled)[0] == ids[2]  # the best left
    for hit in ruled.hits:
        assert hit.score == pytest.approx(sum((hit.explain or {}).values()), abs=1e-6) or (
            hit.product.id == pinned
        )
    without = search_service.text(QUERY, 10, mode="vector", refine=replace(refine, rules=False))
    assert _ids(without) == ids and without.rules == ()
    other = search_service.text(f"{QUERY} for men", 10, mode="vector", refine=refine)
    assert other.rules == ()  # "exact": another query is left alone

    # Boost by an attribute value: every hit with it ranks above every hit without it.
    colour = plain.hits[-1].product.base_colour
    assert colour is not None
    boost = {"attributes": {"baseColour": colour}, "weight": 1}
    rules.add({"when": {"query": "shirt", "match": "contains"}, "then": {"boost": boost}}, "test")
    boosted = search_service.text(QUERY, 10, mode="vector", refine=refine)
    moved = [h for h in boosted.hits if h.product.id not in (pinned, buried)]  # by other rules
    has = [h.product.base_colour == colour for h in moved]
    assert has[0] and has == sorted(has, reverse=True)
    lifted = [(h.explain or {}).get("rules") for h in moved if h.product.base_colour == colour]
    assert lifted == [1.0] * len(lifted)

    # Redirect: the search runs with the rule's filters, and says so.
    gender = next(p.gender for p in search_service.catalog.products.list_products(limit=300).items
                  if p.gender and p.gender != plain.hits[0].product.gender)  # fmt: skip
    rules.add({"when": {"query": "navy", "match": "contains"},
               "then": {"redirect": {"gender": gender}}}, "test")  # fmt: skip
    redirected = search_service.text(QUERY, 10, mode="vector", refine=refine)
    assert redirected.redirect == {"gender": gender}
    assert redirected.hits and all(h.product.gender == gender for h in redirected.hits)
    # A pinned product the search's filters exclude is not shown.
    assert (
        pinned not in _ids(redirected)
        or next(h for h in redirected.hits if h.product.id == pinned).product.gender == gender
    )


def test_conditions_on_understood_values_and_filters(
    search_service: SearchService, rules: Merchandising
) -> None:
    refine = Refinements(min_score=-1.0, understand="boost")
    plain = search_service.text(QUERY, 5, refine=refine)
    article_type = plain.understood.get("articleType")
    assert isinstance(article_type, str), plain.understood
    target = plain.hits[0].product
    rules.add({"when": {"attributes": {"articleType": article_type}},
               "then": {"hide": [target.id]}}, "test")  # fmt: skip
    rules.add({"when": {"filters": {"gender": "Women"}}, "then": {"hide": [target.id]}}, "test")
    assert target.id not in _ids(search_service.text(f"cheap {QUERY}", 5, refine=refine))
    unfiltered = search_service.text("watch", 5, refine=refine)
    assert len(unfiltered.rules) == 0
    women = search_service.text("watch", 5, {"gender": ["Women", "Men"]}, refine=refine)
    assert len(women.rules) == 1


def test_synonyms_feed_understanding_and_the_title_search_within_seconds(
    search_service: SearchService, rules: Merchandising
) -> None:
    refine = Refinements(min_score=-1.0)
    shirts = search_service.text("shirts", 10, mode="hybrid", refine=refine)
    assert shirts.understood.get("articleType") == "Shirts", shirts.understood
    # Another process's view: a service with its own rule cache, read before the change.
    elsewhere = search_service.reconfigured(search_service.settings)
    assert "articleType" not in elsewhere.text("zorblax", 10, refine=refine).understood
    rules.add({"words": ["zorblax"], "synonyms": ["shirts"]}, "test")
    started = time.monotonic()
    while "articleType" not in elsewhere.text("zorblax", 10, refine=refine).understood:
        assert time.monotonic() - started < RULES_TTL_S + 1, "not seen within seconds"
        time.sleep(0.2)
    alike = search_service.text("zorblax", 10, mode="hybrid", refine=refine)
    assert _ids(alike) == _ids(shirts)
    title_text, groups = search_service.reader.title_query("navy zorblax", "boost")
    assert groups == [["zorblax", "shirts"]]
    assert title_text == "Navy Blue"
    titles = search_service.catalog.vectors.title_match_ids(title_text, 50, alternatives=groups)
    plain = search_service.catalog.vectors.title_match_ids("Navy Blue shirts", 50)
    assert titles and {i for i, _ in titles} == {i for i, _ in plain}
    # A cycle with the stored set is refused, and nothing is stored.
    before = rules.entries()
    with pytest.raises(InvalidRequestError, match="cycle"):
        rules.add({"words": ["shirts"], "synonyms": ["zorblax"]}, "test")
    with pytest.raises(InvalidRequestError, match="never read"):
        rules.add({"words": ["old"], "values": {"year": ["2012"]}}, "test")
    with pytest.raises(InvalidRequestError, match="no product has articleType 'Hoodies'"):
        rules.add({"words": ["hoody"], "values": {"articleType": ["Hoodies"]}}, "test")
    with pytest.raises(InvalidRequestError, match="no product has id 999999999"):
        rules.add(
            {"when": {"query": "x"}, "then": {"pin": [{"productId": 999_999_999, "position": 1}]}},
            "test",
        )
    assert rules.entries() == before


def test_rules_through_rest_graphql_and_the_cli(
    search_service: SearchService, rules: Merchandising
) -> None:
    _, admin = search_service.catalog.api_keys.create("merchandiser", "admin")
    _, shopper = search_service.catalog.api_keys.create("shopper", "search")
    plain = search_service.text(QUERY, 3, refine=Refinements(min_score=-1.0))
    hidden = plain.hits[0].product.id
    body = {"when": {"query": QUERY}, "then": {"hide": [hidden]}, "note": "sold out"}
    with api_client(search_service) as api:
        assert api.post("/rules", json=body, headers={"X-API-Key": shopper}).status_code == 403
        assert api.get("/rules").status_code == 401
        keyed = {"X-API-Key": admin}
        added = api.post("/rules", json=body, headers=keyed)
        assert added.status_code == 201, added.text
        rule = added.json()
        assert rule["createdBy"] == "api-key:merchandiser" and rule["body"] == body
        bad = api.post("/rules", json={"when": {}, "then": {"hide": [hidden]}}, headers=keyed)
        assert bad.status_code == 422 and "needs a condition" in bad.json()["detail"]
        assert [r["id"] for r in api.get("/rules", headers=keyed).json()] == [rule["id"]]
        found = api.get("/search/text", params={"q": QUERY, "k": 3, "minScore": -1}).json()
        assert found["rules"] == [rule["id"]] and hidden not in [h["id"] for h in found["hits"]]
        preview = api.get("/search/text", params={"q": QUERY, "k": 3, "minScore": -1,
                                                  "rules": "false"}).json()  # fmt: skip
        assert preview["rules"] == [] and preview["hits"][0]["id"] == hidden

        def graphql(document: str, key: str = admin) -> dict[str, Any]:
            answer: dict[str, Any] = api.post("/graphql", json={"query": document},
                                              headers={"X-API-Key": key}).json()  # fmt: skip
            return answer

        search = """{ searchByText(query: "%s", k: 3, refine: {minScore: -1, rules: %s})
                      { rules hits { product { id } } } }"""
        ruled = graphql(search % (QUERY, "true"))["data"]["searchByText"]
        assert ruled["rules"] == [rule["id"]]
        assert graphql(search % (QUERY, "false"))["data"]["searchByText"]["rules"] == []
        listed = graphql("{ rules { id kind body createdBy } }")["data"]["rules"]
        assert listed == [{"id": str(rule["id"]), "kind": "rule", "body": body,
                           "createdBy": "api-key:merchandiser"}]  # fmt: skip
        refused = graphql("{ rules { id } }", shopper)
        assert refused["errors"][0]["extensions"]["status"] == 403
        added_set = graphql('mutation { addRule(body: {synonyms: ["tee", "tshirt"]}) { id kind } }')
        assert added_set["data"]["addRule"]["kind"] == "synonyms", added_set
        cycle = graphql('mutation { addRule(body: {words: ["tshirt"], synonyms: ["tee"]}) { id } }')
        assert cycle["errors"][0]["extensions"]["status"] == 422, cycle
        set_id = added_set["data"]["addRule"]["id"]
        removed = graphql(f'mutation {{ removeRule(id: "{set_id}") }}')
        assert removed["data"] == {"removeRule": True}
        again = graphql(f'mutation {{ removeRule(id: "{set_id}") }}')
        assert again["errors"][0]["extensions"]["status"] == 404
        assert api.delete(f"/rules/{rule['id']}", headers=keyed).status_code == 204
        assert api.delete(f"/rules/{rule['id']}", headers=keyed).status_code == 404
    assert rules.entries() == []

    env = child_env(search_service.settings)
    cli = [sys.executable, "-m", "fashion_search.cli", "rules"]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], env=env, cwd=REPO_ROOT, capture_output=True,
                              text=True, check=check, timeout=120)  # fmt: skip

    unknown = run("add", '{"when": {"query": "x"}, "then": {"hide": [999999999]}}', check=False)
    assert unknown.returncode == 2 and "no product has id 999999999" in unknown.stderr
    assert "added by test" in run("add", json.dumps(body), "--by", "test").stdout
    (entry,) = rules.entries()
    assert str(entry.id) in run("list").stdout
    tested = run("test", QUERY, "-k", "3").stdout
    assert f"rules applied: [{entry.id}]" in tested
    rows = tested.splitlines()[2:]
    assert str(hidden) not in " ".join(r[:54] for r in rows) and str(hidden) in rows[0][54:]
    assert f"rule {entry.id} removed" in run("remove", str(entry.id)).stdout
    assert rules.entries() == []


# One result per style.


def _titled(id: int, title: str, colour: str, article_type: str = "Tshirts") -> Product:
    return Product(id=id, product_display_name=title, image_key="a.jpg", base_colour=colour,
                   article_type=article_type)  # fmt: skip


def test_colour_variants_group_under_the_first_and_a_repeated_colour_stands_alone() -> None:
    colours = colour_words(["Grey", "Black", "Navy Blue"])
    products = [
        _titled(1, "Puma Men Grey T-shirt", "Grey"),
        _titled(2, "Puma Women Black T-shirt", "Black"),
        _titled(3, "Puma Men Navy Blue Shirt", "Navy Blue", "Shirts"),  # another article type
        _titled(4, "Puma Men Grey T-shirt", "Grey"),  # a colour the style shows: its own hit
        _titled(5, "Puma Men Navy Blue T-shirt", "Navy Blue"),
        _titled(6, "Nike Men Grey T-shirt", "Grey"),
    ]
    assert style_key(products[0], colours) == ("Tshirts", "puma tshirt")
    grouped = group_by_style(products, lambda p: p, colours)
    assert [(p.id, [v.id for v in variants]) for p, variants in grouped] == [
        (1, [2, 5]), (3, []), (4, []), (6, []),
    ]  # fmt: skip


def test_search_grouped_by_style_through_the_service_rest_and_graphql(
    search_service: SearchService,
) -> None:
    refine = Refinements(min_score=-1.0, candidates=300)
    plain = search_service.text("maxima dial watch", 100, mode="vector", refine=refine)
    grouped = search_service.text(
        "maxima dial watch", 30, mode="vector", refine=replace(refine, group="style")
    )
    colours = search_service.reader.vocabulary().colours
    shown = [h.product.id for h in grouped.hits]
    variants = [v.product.id for h in grouped.hits for v in h.variants]
    assert any(len(h.variants) >= 2 for h in grouped.hits), "the test catalog has 3 Maxima colours"
    assert not set(shown) & set(variants) and len(set(variants)) == len(variants)
    assert shown == [i for i in _ids(plain) if i not in variants][: len(shown)]  # order kept
    for hit in grouped.hits:
        styles = {style_key(v.product, colours) for v in hit.variants}
        assert styles <= {style_key(hit.product, colours)}
        hues = [hit.product.base_colour, *(v.product.base_colour for v in hit.variants)]
        assert len(set(hues)) == len(hues)
    with api_client(search_service) as api:
        params = {"q": "maxima dial watch", "k": 30, "minScore": -1, "candidates": 300,
                  "mode": "vector", "group": "style"}  # fmt: skip
        body = api.get("/search/text", params=params).json()
        assert [h["id"] for h in body["hits"]] == shown
        assert [[v["id"] for v in h["variants"]] for h in body["hits"]] == [
            [v.product.id for v in h.variants] for h in grouped.hits
        ]
        assert all(v["imageUrl"].startswith("http") for h in body["hits"] for v in h["variants"])
        document = """{ searchByText(query: "maxima dial watch", k: 30, mode: "vector",
            refine: {minScore: -1, candidates: 300, group: "style"})
            { hits { product { id } variants { id baseColour imageUrl } } } }"""
        data = api.post("/graphql", json={"query": document}).json()
        assert not data.get("errors"), data
        hits = data["data"]["searchByText"]["hits"]
        assert [[v["id"] for v in h["variants"]] for h in hits] == [
            [str(v["id"]) for v in h["variants"]] for h in body["hits"]
        ]
        assert api.get("/search/text", params={**params, "group": "brand"}).status_code == 422


def test_each_rule_kind_through_rest_and_graphql(
    search_service: SearchService, rules: Merchandising
) -> None:
    _, admin = search_service.catalog.api_keys.create("rule-kinds", "admin")
    keyed = {"X-API-Key": admin}
    params = {"q": QUERY, "k": 10, "minScore": -1, "mode": "vector", "understand": "off"}
    document = """{ searchByText(query: "%s", k: 10, mode: "vector",
        refine: {minScore: -1, understand: "off", explain: true})
        { rules redirect { field value }
          hits { product { id gender } explain { name value } } } }"""
    with api_client(search_service) as api:

        def graphql() -> dict[str, Any]:
            answer = api.post("/graphql", json={"query": document % QUERY}).json()
            assert not answer.get("errors"), answer
            result: dict[str, Any] = answer["data"]["searchByText"]
            return result

        ids = [h["id"] for h in api.get("/search/text", params=params).json()["hits"]]
        other = next(p.id for p in search_service.catalog.products.list_products(limit=300).items
                     if p.id not in ids)  # fmt: skip
        kinds = {
            "pin": {"pin": [{"productId": other, "position": 3}]},
            "hide": {"hide": [ids[0]]},
            "bury": {"bury": {"productIds": [ids[1]], "weight": 1}},
            "boost": {"boost": {"productIds": [ids[9]], "weight": 1}},
        }
        for then in kinds.values():
            added = api.post("/rules", json={"when": {"query": QUERY}, "then": then}, headers=keyed)
            assert added.status_code == 201, added.text
        body = api.get("/search/text", params={**params, "explain": "true"}).json()
        shown = [h["id"] for h in body["hits"]]
        assert len(body["rules"]) == 4 and shown[0] == ids[9] and shown[2] == other
        assert ids[0] not in shown and ids[1] not in shown
        assert body["hits"][0]["explain"]["rules"] == 1.0
        assert body["hits"][2]["explain"] == {"pinned": 3.0}
        found = graphql()
        assert [int(h["product"]["id"]) for h in found["hits"]] == shown
        assert found["rules"] == body["rules"] and found["redirect"] is None

        gender = next(g for g in ("Women", "Men", "Boys", "Girls", "Unisex")
                      if g not in {h["gender"] for h in body["hits"][:3]})  # fmt: skip
        redirect = {"when": {"query": QUERY}, "then": {"redirect": {"gender": gender}}}
        if api.post("/rules", json=redirect, headers=keyed).status_code == 422:
            pytest.skip(f"the test catalog has no {gender} products")
        body = api.get("/search/text", params=params).json()
        assert body["redirect"] == {"gender": gender}
        assert body["hits"] and all(h["gender"] == gender for h in body["hits"])
        found = graphql()
        assert found["redirect"] == [{"field": "gender", "value": gender}]
        assert {h["product"]["gender"] for h in found["hits"]} == {gender}
