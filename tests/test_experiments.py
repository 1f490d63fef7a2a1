"""Online experiments: the design's checks, sticky assignment by the shares, the analysis and
its sequential test on simulated outcomes (no server); then against PostgreSQL with the
stand-in embedder: starts refused with nothing stored, searches answered by the arm they name
(a ranking setting, another model version) over the service and REST, feedback credited to
the search, the status and stop, and a search loop through a start and a stop."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from fashion_search.catalog.models import ProductFields
from fashion_search.embedding_client import Embeddings
from fashion_search.errors import (
    ExperimentStateError,
    InvalidRequestError,
)
from fashion_search.experiments.analysis import SearchOutcome, analyse, analyse_interleaved
from fashion_search.experiments.assignment import assign
from fashion_search.experiments.design import Design
from fashion_search.experiments.interleaving import INTERLEAVED, team_draft
from fashion_search.experiments.service import Experiments
from fashion_search.learning.feedback import Feedback
from fashion_search.search.request import SearchRequest
from fashion_search.search.service import SearchService
from fashion_search.settings import REPO_ROOT, ExperimentSettings, Settings
from fashion_search.storage import ObjectStore
from tests.helpers import api_client
from tests.stand_in import DIMENSION, StandInEmbedder, stand_in_catalog

ROWS = 1000
#: A second model version of the stand-in catalog: a worse one (its vectors shuffled).
OTHER = "stand-in-2"


# --- no server -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arms", "shares", "problem"),
    [
        (["A=serving"], {}, "at least 2"),
        (["A=serving", "B=mode:fast"], {}, "mode is one of vector, hybrid"),
        (["A=serving", "B=version:3"], {"B": 1.2}, "less than or equal to 1"),
        (["A=serving", "B=version:3"], {"A": 0.5, "B": 0.6}, "sum to 1"),
        (["A=serving", "A=mode:vector"], {}, "names must differ"),
        (["A=serving", "B=serving"], {}, "do the same thing"),
        (["A=serving", "B=version"], {}, "needs a value"),
        (["A serving", "B=mode:vector"], {}, "write NAME=WHAT"),
        (["A=serving", "B=mode:vector"], {"C": 0.5}, "names no arm"),
    ],
)
def test_a_bad_design_is_refused_with_what_is_wrong(
    arms: list[str], shares: dict[str, float], problem: str
) -> None:
    with pytest.raises(InvalidRequestError, match=problem):
        Design.parse(arms, shares)


def test_assignment_is_sticky_and_follows_the_shares() -> None:
    design = Design.parse(["A=serving", "B=mode:vector", "C=understand:off"], {"B": 0.1})
    sessions = [uuid.uuid4().hex for _ in range(20_000)]
    first = [assign(7, design, s).name for s in sessions]
    assert [assign(7, design, s).name for s in sessions] == first  # sticky
    counts = Counter(first)
    for arm in design.arms:  # within 4 standard deviations of the share
        expected = arm.share * len(sessions)
        assert abs(counts[arm.name] - expected) < 4 * np.sqrt(expected), counts
    other = [assign(8, design, s).name for s in sessions]
    assert 0.3 < np.mean([a != b for a, b in zip(first, other, strict=True)]) < 0.7  # reshuffled


def _simulated(ctr: dict[str, float], sessions: int, seed: int) -> list[SearchOutcome]:
    """Sessions split evenly, 1-5 searches each, clicked with the arm's probability."""
    rng, outcomes = random.Random(seed), []
    for session in range(sessions):
        arm = "A" if rng.random() < 0.5 else "B"
        for _ in range(rng.randint(1, 5)):
            clicked = rng.random() < ctr[arm]
            outcomes.append(
                SearchOutcome(arm, str(session), rng.randint(1, 10) if clicked else None,
                              clicked and rng.random() < 0.2, rng.random() < 0.05)
            )  # fmt: skip
    return outcomes


def test_the_sequential_test_finds_a_better_arm_and_rarely_a_difference_that_is_not_there() -> None:
    better = analyse(["A", "B"], _simulated({"A": 0.30, "B": 0.37}, 3000, 0), 0.05, 100)
    assert better.verdict == "B better, stop"
    low, high = better.comparisons[0].difference.interval
    assert low < 0.07 < high
    worse = analyse(["A", "B"], _simulated({"A": 0.37, "B": 0.30}, 3000, 1), 0.05, 100)
    assert worse.verdict == "A better, stop"
    # A difference that is not there, looked at every 200 sessions: decided at most rarely.
    wrong = 0
    for seed in range(20):
        outcomes = _simulated({"A": 0.3, "B": 0.3}, 2000, 100 + seed)
        looks = [
            analyse(["A", "B"], [o for o in outcomes if int(o.session_id) < n], 0.05, 100)
            for n in range(200, 2001, 200)
        ]
        wrong += any(look.verdict != "keep running" for look in looks)
    assert wrong <= 3  # alpha 0.05 of 20 is 1; 3 is far in the binomial's tail
    few = analyse(["A", "B"], _simulated({"A": 0.1, "B": 0.9}, 50, 2), 0.05, 100)
    assert few.verdict == "keep running"  # too few sessions to trust the variance
    silent = analyse(["A", "B"], _simulated({"A": 0.0, "B": 0.0}, 1000, 3), 0.05, 100)
    assert silent.verdict == "keep running"  # no click anywhere: no evidence either way


def test_interleaving_takes_two_arms_only() -> None:
    with pytest.raises(InvalidRequestError, match="exactly two arms"):
        Design.parse(["A=serving", "B=mode:vector", "C=understand:off"], interleave=True)


@pytest.mark.parametrize("seed", range(20))
def test_team_draft_keeps_each_rankings_order_and_balances_the_teams(seed: int) -> None:
    rng = random.Random(seed)
    first = rng.sample(range(30), 15)
    second = rng.sample(range(30), 15)
    merged = team_draft(first, second, 10, rng)
    items = [item for item, _ in merged]
    assert len(items) == len(set(items)) == 10
    for team, ranking in ((0, first), (1, second)):
        picks = [item for item, t in merged if t == team]
        assert picks == sorted(picks, key=ranking.index)  # each team in its own order
        # a team's pick is its best result not picked before it
        for item in picks:
            before = items[: items.index(item)]
            assert item == next(r for r in ranking if r not in before)
    counts = Counter(team for _, team in merged)
    assert abs(counts[0] - counts[1]) <= 1
    assert team_draft([1, 2], [2, 1], 5, rng) in ([(1, 0), (2, 1)], [(2, 1), (1, 0)])


def _interleaved(better: float, sessions: int, seed: int) -> list[SearchOutcome]:
    """Searches whose clicks go to the second arm's results with probability ``better``."""
    rng, outcomes = random.Random(seed), []
    for session in range(sessions):
        for _ in range(rng.randint(1, 4)):
            clicks = rng.randint(0, 2)
            seconds = sum(rng.random() < better for _ in range(clicks))
            outcomes.append(SearchOutcome(INTERLEAVED, str(session), None, False, False,
                                          (clicks - seconds, seconds)))  # fmt: skip
    return outcomes


def test_the_interleaved_analysis_finds_the_preferred_arm() -> None:
    preferred = analyse_interleaved(["A", "B"], _interleaved(0.6, 1000, 0), 0.05, 100)
    assert preferred.verdict == "B better, stop"
    assert preferred.arms[1].figures["win_rate"].value > preferred.arms[0].figures["win_rate"].value
    assert analyse_interleaved(["A", "B"], _interleaved(0.4, 1000, 1), 0.05, 100).verdict == (
        "A better, stop"
    )
    even = [
        analyse_interleaved(["A", "B"], _interleaved(0.5, 1000, s), 0.05, 100) for s in range(20)
    ]
    assert sum(a.verdict != "keep running" for a in even) <= 3


# --- against PostgreSQL, the stand-in embedder ---------------------------------------------


class _TwoVersions(StandInEmbedder):
    """Answers with the version asked: the other one is a worse model (the catalog holds its
    embeddings shuffled between products)."""

    def embed_texts(self, texts: Sequence[str], version: str | None = None) -> Embeddings:
        answer = super().embed_texts(texts, version)
        return Embeddings(answer.vectors, OTHER) if version == OTHER else answer


@dataclass
class Shop:
    service: SearchService
    fields: list[ProductFields]


@pytest.fixture(scope="module")
def shop(stack_settings: Settings, dataset_products: list[ProductFields]) -> Iterator[Shop]:
    fields = dataset_products[:ROWS]
    with stand_in_catalog(stack_settings, fields, "experiments") as (settings, catalog, vectors):
        catalog.versions.create(OTHER, DIMENSION)
        shuffled = np.random.default_rng(0).permutation(len(fields))  # a worse model
        catalog.embeddings.set_embeddings(OTHER, [f.id for f in fields], vectors[shuffled])
        catalog.versions.mark_ready(OTHER)
        service = SearchService(settings, catalog, ObjectStore(settings), _TwoVersions())
        yield Shop(service, fields)


@pytest.fixture
def experiments(shop: Shop) -> Iterator[SearchService]:
    """The shop's service; any experiment left running is stopped after the test."""
    yield shop.service
    running = shop.service.catalog.experiments.running()
    if running is not None:
        shop.service.experiments.stop(running.id, "test")


def _count(service: SearchService) -> int:
    with service.catalog.pool.connection() as conn:
        row = conn.execute("SELECT count(*) FROM experiments").fetchone()
    return int(row[0]) if row else 0


def test_a_start_is_refused_with_nothing_stored(experiments: SearchService) -> None:
    before = _count(experiments)
    with pytest.raises(InvalidRequestError, match="no embeddings of version 99"):
        experiments.experiments.start(Design.parse(["A=serving", "B=version:99"]), "test")
    assert _count(experiments) == before
    experiments.experiments.start(Design.parse(["A=serving", "B=mode:vector"]), "test")
    with pytest.raises(ExperimentStateError, match="is running"):
        experiments.experiments.start(Design.parse(["A=serving", "B=version:" + OTHER]), "test")
    assert _count(experiments) == before + 1


def test_each_search_is_answered_by_the_arm_it_names(experiments: SearchService) -> None:
    started = experiments.experiments.start(
        Design.parse(["A=serving", "B=mode:vector", f"C=version:{OTHER}"]), "test"
    )
    request = SearchRequest.of(query="red tshirt", k=5)
    plain = experiments.search(request)
    assert plain.experiment is None and experiments.search(request, None).experiment is None
    seen = set()
    for i in range(60):
        session = f"shopper-{i}"
        result = experiments.search(request, session)
        assert result.experiment is not None and result.experiment.experiment_id == started.id
        arm = assign(started.id, started.design, session)
        assert result.experiment.arm == arm.name
        seen.add(arm.name)
        if arm.name == "A":
            assert (result.mode, result.model_version) == ("hybrid", "stand-in-1")
        elif arm.name == "B":
            assert (result.mode, result.model_version) == ("vector", "stand-in-1")
        else:
            assert (result.mode, result.model_version) == ("hybrid", OTHER)
    assert seen == {"A", "B", "C"}


def test_feedback_is_credited_to_its_search_and_the_status_counts_it(
    experiments: SearchService,
) -> None:
    started = experiments.experiments.start(Design.parse(["A=serving", "B=mode:vector"]), "t")
    feedback = experiments.catalog.feedback
    for i in range(6):
        result = experiments.search(SearchRequest.of(query="blue jeans", k=10), f"s{i}")
        assert result.experiment is not None
        hit = result.hits[2]
        feedback.record(Feedback(signal="click", query="blue jeans", product_id=hit.product.id,
                                 position=3, session_id=f"s{i}",
                                 search_id=result.experiment.search_id))  # fmt: skip
    with pytest.raises(InvalidRequestError, match="not a search of an experiment"):
        feedback.record(Feedback(signal="click", query="x", product_id=hit.product.id,
                                 position=1, session_id="s", search_id=10**12))  # fmt: skip
    status = experiments.experiments.status(started.id).to_json()
    assert sum(arm["sessions"] for arm in status["arms"]) == 6
    assert sum(arm["searches"] for arm in status["arms"]) == 6
    for arm in status["arms"]:
        if arm["searches"]:
            assert arm["figures"]["ctrAt10"]["value"] == 1.0
            assert arm["figures"]["mrrFirstClick"]["value"] == pytest.approx(1 / 3)
    assert status["verdict"] == "keep running"
    stopped = experiments.experiments.stop(None, "test")
    assert stopped.experiment.decision == {"verdict": "keep running",
                                           "comparisons": status["comparisons"]}  # fmt: skip
    with pytest.raises(ExperimentStateError, match="stopped already"):
        experiments.experiments.stop(started.id, "test")


def test_rest_names_the_arm_and_admins_start_and_stop(experiments: SearchService) -> None:
    api = api_client(experiments)
    repository = experiments.catalog.api_keys
    admin = {"X-API-Key": repository.create(f"exp-admin-{uuid.uuid4().hex[:6]}", "admin")[1]}
    body = {"arms": [{"name": "A", "kind": "serving", "share": 0.5},
                     {"name": "B", "kind": "mode", "value": "vector", "share": 0.5}]}  # fmt: skip
    assert api.post("/experiments", json=body).status_code == 401
    bad = {"arms": [{**body["arms"][0], "share": 0.7}, body["arms"][1]]}
    refused = api.post("/experiments", json=bad, headers=admin)
    assert refused.status_code == 422 and "sum to 1" in refused.json()["detail"]
    started = api.post("/experiments", json=body, headers=admin)
    assert started.status_code == 201, started.text
    assert api.post("/experiments", json=body, headers=admin).status_code == 409
    answer = api.get("/search/text", params={"q": "red tshirt"}, headers={"X-Session-Id": "x1"})
    assert answer.status_code == 200, answer.text
    shown = answer.json()["experiment"]
    assert shown["id"] == started.json()["id"] and shown["arm"] in {"A", "B"}
    assert answer.json()["mode"] == ("hybrid" if shown["arm"] == "A" else "vector")
    assert api.get("/search/text", params={"q": "red tshirt"}).json()["experiment"] is None
    graphql = api.post(
        "/graphql", headers={"X-Session-Id": "x1"},
        json={"query": '{ searchByText(query: "red tshirt") { mode experiment { arm } } }'},
    ).json()["data"]["searchByText"]  # fmt: skip
    assert graphql == {"mode": answer.json()["mode"], "experiment": {"arm": shown["arm"]}}
    recorded = api.post("/feedback", json={
        "signal": "click", "query": "red tshirt", "productId": answer.json()["hits"][0]["id"],
        "position": 1, "sessionId": "x1", "searchId": shown["searchId"]})  # fmt: skip
    assert recorded.status_code == 201, recorded.text
    status = api.get("/experiments", headers=admin).json()
    assert status["running"] and sum(a["searches"] for a in status["arms"]) == 2
    stopped = api.post("/experiments/stop", headers=admin)
    assert stopped.status_code == 200 and stopped.json()["running"] is False
    assert api.post("/experiments/stop", headers=admin).status_code == 422  # none runs


def test_a_search_loop_through_a_start_and_a_stop_sees_no_error(
    experiments: SearchService,
) -> None:
    """Four shoppers search while an experiment starts and stops: no error, and every answer
    comes from the arm it names (vector for B, hybrid for A and outside the experiment)."""
    stop, problems, answers = threading.Event(), [], Counter()

    def shopper(n: int) -> None:
        while not stop.is_set():
            try:
                result = experiments.search(SearchRequest.of(query="black shoes"), f"loop{n}")
                arm = result.experiment.arm if result.experiment else None
                answers[arm] += 1
                if result.mode != ("vector" if arm == "B" else "hybrid"):
                    problems.append(f"{arm} answered {result.mode}")
            except Exception as error:
                problems.append(repr(error))

    threads = [threading.Thread(target=shopper, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        stop.wait(1.5)
        experiments.experiments.start(
            Design.parse(["A=serving", "B=mode:vector"], {"B": 0.5}), "loop"
        )
        stop.wait(3.0)
        experiments.experiments.stop(None, "loop")
        stop.wait(3.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not problems, problems[:5]
    assert answers[None] and answers["A"] + answers["B"], answers


def test_the_cli_starts_reads_and_stops_an_experiment(experiments: SearchService) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fashion_search.cli", "experiments", *args],
            env=experiments.settings.to_env(), cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    refused = cli("start", "--arm", "A=serving", "--arm", "B=version:99")
    assert refused.returncode == 2 and "no embeddings of version 99" in refused.stderr
    started = cli("start", "--arm", "A=serving", "--arm", f"B=version:{OTHER}", "--share", "B=0.1")
    assert started.returncode == 0, started.stderr
    assert "A: serving (90% of sessions)" in started.stdout
    assert f"B: version:{OTHER} (10% of sessions)" in started.stdout
    assert cli("start", "--arm", "A=serving", "--arm", "B=mode:vector").returncode == 2
    status = cli("status")
    assert status.returncode == 0 and "verdict: keep running" in status.stdout, status.stderr
    stopped = cli("stop", "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["running"] is False


def test_the_running_experiments_figures_are_prometheus_metrics(
    experiments: SearchService,
) -> None:
    from fashion_search.telemetry.metrics import ExperimentFigures

    collector = ExperimentFigures(experiments.experiments.running_status)
    assert all(not family.samples for family in collector.collect())  # none runs
    started = experiments.experiments.start(Design.parse(["A=serving", "B=mode:vector"]), "t")
    for i in range(4):
        experiments.search(SearchRequest.of(query="red tshirt"), f"m{i}")
    samples = {
        (s.name, s.labels.get("arm"), s.labels.get("figure")): s.value
        for family in collector.collect()
        for s in family.samples
        if s.labels["experiment"] == str(started.id)
    }
    searched = [a for a in ("A", "B") if ("fashion_search_experiment_searches", a, None) in samples]
    assert sum(samples["fashion_search_experiment_searches", a, None] for a in searched) == 4
    assert ("fashion_search_experiment_figure", searched[0], "ctr_at_10") in samples
    assert ("fashion_search_experiment_p_value", "B", None) in samples


def test_an_interleaved_search_merges_both_arms_and_credits_the_clicked_one(
    experiments: SearchService,
) -> None:
    started = experiments.experiments.start(
        Design.parse(["A=serving", f"B=version:{OTHER}"], interleave=True), "t"
    )
    request = SearchRequest.of(query="red tshirt", k=10)
    other = SearchService(experiments.settings, experiments.catalog, experiments.store,
                          experiments.embedder, version=OTHER)  # fmt: skip
    alone = {name: [h.product.id for h in service.search(request).hits]
             for name, service in (("A", experiments), ("B", other))}  # fmt: skip
    result = experiments.search(request, "both")
    assert result.experiment is not None and result.experiment.arm == INTERLEAVED
    assert {hit.arm for hit in result.hits} == {"A", "B"} and len(result.hits) == 10
    for arm in started.design.arms:  # each arm's hits in that arm's own order
        picked = [h.product.id for h in result.hits if h.arm == arm.name]
        assert picked == [i for i in alone[arm.name] if i in picked]
    clicked = next(hit for hit in result.hits if hit.arm == "B")
    experiments.catalog.feedback.record(Feedback(
        signal="click", query="red tshirt", product_id=clicked.product.id, position=1,
        session_id="both", search_id=result.experiment.search_id))  # fmt: skip
    status = experiments.experiments.status(started.id).to_json()
    assert status["interleave"] is True
    wins = {arm["name"]: arm["figures"]["winRate"]["value"] for arm in status["arms"]}
    assert wins == {"A": 0.0, "B": 1.0}
    rest = (
        api_client(experiments)
        .get("/search/text", params={"q": "red tshirt"}, headers={"X-Session-Id": "rest"})
        .json()
    )
    assert rest["experiment"]["arm"] == INTERLEAVED and {h["arm"] for h in rest["hits"]} == {
        "A",
        "B",
    }


@pytest.mark.parametrize("interleave", [False, True])
def test_simulated_shoppers_lead_the_experiment_to_the_better_version(
    experiments: SearchService, shop: Shop, interleave: bool
) -> None:
    """SIMULATED shoppers search for a product's title (vector search, no understanding, as a
    client may ask) and click, with a position bias (1/position) and noise (0.05), the hits
    of the same article type and colour; the worse version loses, split or interleaved."""
    started = experiments.experiments.start(
        Design.parse(["A=serving", f"B=version:{OTHER}"], interleave=interleave), "sim"
    )
    judge = Experiments(experiments.catalog, ExperimentSettings(min_sessions=30))
    rng = random.Random(int(interleave))
    verdict, sessions = "keep running", 0
    while verdict == "keep running" and sessions < 1000:
        for _ in range(25):
            session, sessions = f"sim-{interleave}-{sessions}", sessions + 1
            wanted = rng.choice(shop.fields)
            request = SearchRequest.of(query=wanted.product_display_name, k=10, mode="vector",
                                       understand="off")  # fmt: skip
            result = experiments.search(request, session)
            assert result.experiment is not None
            for position, hit in enumerate(result.hits, 1):
                relevant = (hit.product.article_type, hit.product.base_colour) == (
                    wanted.article_type, wanted.base_colour)  # fmt: skip
                if rng.random() < (0.9 if relevant else 0.05) / position:
                    experiments.catalog.feedback.record(Feedback(
                        signal="click", query=request.query or "", product_id=hit.product.id,
                        position=position, session_id=session,
                        search_id=result.experiment.search_id))  # fmt: skip
        verdict = judge.status(started.id).analysis.verdict
    assert verdict == "A better, stop", (verdict, sessions)
