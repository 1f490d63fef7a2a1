"""Shoppers' feedback: recorded through REST and GraphQL, refused with a 4xx and nothing stored
when bad, relayed to the feedback topic once; judgements made of it evaluate the served search
(``fashion-search eval --judgements feedback``) and give fine-tuning its pairs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import torch
from confluent_kafka import Consumer
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from fashion_search.catalog.models import Neighbor, Product
from fashion_search.catalog.vote import Prediction
from fashion_search.ingest.classify import LabelRule, predict_labels
from fashion_search.ingest.publisher import KafkaPublisher, kafka_config
from fashion_search.learning.feedback import Feedback
from fashion_search.learning.judgements import Judgements, evaluate_judgements, training_pairs
from fashion_search.model.fingerprint import fingerprint_bytes
from fashion_search.model.train import hard_negative_loss
from fashion_search.search.service import SearchService
from fashion_search.settings import REPO_ROOT, Settings
from functions.events.feedback_relay import FeedbackRelay
from stack.topics import ensure_topics
from tests.helpers import api_client, child_env

RECORD = """mutation($signal: String!, $query: String!, $productId: ID!, $position: Int!,
  $sessionId: String!) { recordFeedback(signal: $signal, query: $query, productId: $productId,
  position: $position, sessionId: $sessionId) { id createdAt } }"""


@pytest.fixture(scope="module")
def api(search_service: SearchService) -> Iterator[TestClient]:
    with api_client(search_service) as client:
        client.raise_server_exceptions = True
        yield client


@pytest.fixture(scope="module")
def product_id(search_service: SearchService) -> int:
    return search_service.catalog.products.list_products({}, 1, None).items[0].id  # type: ignore[no-any-return]


def feedback(product_id: int, **change: Any) -> dict[str, Any]:
    return {"signal": "click", "query": "navy blue shirt", "productId": product_id,
            "position": 1, "sessionId": f"s-{uuid.uuid4().hex}", **change}  # fmt: skip


def stored(service: SearchService) -> int:
    return service.catalog.feedback.count()


def test_feedback_is_recorded_through_rest_and_graphql_and_relayed_once(
    api: TestClient, search_service: SearchService, search_settings: Settings, product_id: int
) -> None:
    body = feedback(product_id, signal="add_to_cart", position=3, modelVersion="1")
    response = api.post("/feedback", json=body)
    assert response.status_code == 201, response.text
    rest_id = response.json()["id"]
    answer = api.post("/graphql", json={"query": RECORD, "variables": feedback(product_id)})
    assert answer.status_code == 200 and not answer.json().get("errors"), answer.text
    graphql_id = int(answer.json()["data"]["recordFeedback"]["id"])
    records = {r.id: r for r in search_service.catalog.feedback.records()}
    assert (records[rest_id].signal, records[rest_id].position) == ("add_to_cart", 3)
    assert records[rest_id].model_version == "1" and records[graphql_id].signal == "click"

    topic = f"test-{uuid.uuid4().hex[:8]}.feedback"
    relay_settings = search_settings.replace(kafka={"feedback_topic": topic})
    ensure_topics(relay_settings, (topic,))
    relay = FeedbackRelay(search_service.catalog.feedback, KafkaPublisher(relay_settings))
    relayed = relay.relay_once()
    assert relayed >= 2 and relay.relay_once() == 0  # each record once
    consumer = Consumer(kafka_config(relay_settings, {
        "group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}))  # fmt: skip
    consumer.subscribe([topic])
    messages: dict[int, dict[str, Any]] = {}
    for _ in range(60):
        if len(messages) >= relayed:
            break
        message = consumer.poll(1.0)
        if message is not None and not message.error():
            value = json.loads(message.value() or b"{}")
            messages[value["id"]] = value
    consumer.close()
    assert len(messages) == relayed
    assert messages[rest_id]["signal"] == "add_to_cart"
    assert messages[rest_id]["productId"] == product_id
    assert messages[rest_id]["sessionId"] == body["sessionId"]
    datetime.fromisoformat(messages[rest_id]["createdAt"])


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"productId": 999_999_999}, 404),  # not in the catalog
        ({"position": 0}, 422),
        ({"position": -3}, 422),
        ({"signal": "purchase"}, 422),
        ({"sessionId": "x" * 10_000}, 422),
        ({"query": ""}, 422),
        ({"query": "red\x00dress"}, 422),
        ({"position": "1"}, 422),  # a string is not a position
        ({"extra": 1}, 422),
    ],
)
def test_bad_feedback_is_refused_and_nothing_is_stored(
    api: TestClient, search_service: SearchService, product_id: int,
    change: dict[str, Any], status: int,
) -> None:  # fmt: skip
    before = stored(search_service)
    response = api.post("/feedback", json=feedback(product_id, **change))
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    variables = feedback(product_id, **change)
    variables.pop("extra", None)
    if "extra" not in change and change.get("position") != "1":  # GraphQL types those itself
        answer = api.post("/graphql", json={"query": RECORD, "variables": variables})
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.json()["errors"][0]["message"]
    assert stored(search_service) == before


def test_eval_scores_the_served_search_against_logged_judgements(
    api: TestClient, search_service: SearchService, search_settings: Settings
) -> None:
    query = f"black watch {uuid.uuid4().hex[:6]}"  # a query of its own
    hits = [h.product.id for h in search_service.text(query, 10, mode="vector").hits]
    session = uuid.uuid4().hex
    for signal, product, position in (("not_relevant", hits[0], 1), ("click", hits[2], 3),
                                      ("add_to_cart", hits[2], 3)):  # fmt: skip
        body = feedback(product, signal=signal, query=query.upper(), position=position,
                        sessionId=session)  # fmt: skip
        assert api.post("/feedback", json=body).status_code == 201
    judgements = Judgements.of(search_service.catalog.feedback.records())
    assert judgements.relevant[query] == {hits[2]}
    assert judgements.not_relevant[query] == {hits[0]}

    def rank(text: str) -> list[int]:
        return [h.product.id for h in search_service.text(text, 100, mode="vector").hits]

    mine = Judgements({query: {hits[2]}}, {query: {hits[0]}})
    assert evaluate_judgements(rank, mine) == {
        "queries": 1.0, "p_at_10": 0.1, "mrr": pytest.approx(1 / 3), "judged_at_10": 0.2,
    }  # fmt: skip
    expected = evaluate_judgements(rank, judgements)
    result = subprocess.run(
        [sys.executable, "-m", "fashion_search.cli", "eval", "--judgements", "feedback",
         "--mode", "vector"],
        env=child_env(search_settings), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = dict(line.split() for line in result.stdout.splitlines()[1:])
    assert float(printed["p_at_10"]) == pytest.approx(expected["p_at_10"], abs=1e-4)
    assert float(printed["mrr"]) == pytest.approx(expected["mrr"], abs=1e-4)
    assert float(printed["queries"]) == expected["queries"] >= 1


# --- units: judgements, pairs, the hard-negative term, the upload-label rule -----------------


def _record(signal: str, query: str, product: int) -> Feedback:
    return Feedback(signal=signal, query=query, product_id=product, position=1, session_id="s")  # type: ignore[arg-type]


def test_judgements_weigh_signals_and_pairs_keep_to_the_training_split() -> None:
    records = [
        _record("click", "Red  Dress", 1), _record("add_to_cart", "red dress", 1),
        _record("not_relevant", "red dress", 1),  # 2 positive, 1 mark: relevant
        _record("click", "red dress", 2), _record("not_relevant", "red dress", 2),  # a tie
        _record("not_relevant", "red dress", 3), _record("click", "red dress", 9),
        _record("not_relevant", "blue shirt", 4),  # no positive: no pair
    ]  # fmt: skip
    judged = Judgements.of(records)
    assert judged.relevant == {"red dress": {1, 9}}
    assert judged.not_relevant == {"red dress": {2, 3}, "blue shirt": {4}}
    train_ids = [3, 1, 2, 4]
    pairs = training_pairs(judged, train_ids)  # product 9 is a test product: skipped
    assert pairs.queries == ["red dress"] and [train_ids[i] for i in pairs.positives] == [1]
    assert train_ids[pairs.negatives[0]] in {2, 3} and pairs.hard_negatives == 1
    assert pairs.skipped == 1


def test_the_hard_negative_term_prefers_the_relevant_image() -> None:
    text = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0]]), dim=-1)
    near, far = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    scale = torch.tensor(10.0)
    assert hard_negative_loss(text, near, far, scale) < hard_negative_loss(text, far, near, scale)
    assert float(hard_negative_loss(text, near, far, scale)) == pytest.approx(
        float(torch.nn.functional.softplus(torch.tensor(-10.0))), rel=1e-5
    )


def _neighbour(
    article: str, colour: str, score: float, image_print: bytes | None = None
) -> Neighbor:
    product = Product(id=1, product_display_name="x", image_key="k", article_type=article,
                      base_colour=colour, image_fingerprint=image_print)  # fmt: skip
    return Neighbor(product=product, score=score)


def test_a_duplicate_takes_its_products_labels_and_others_are_voted() -> None:
    near = [_neighbour("Shirts", "Navy Blue", 0.99), *(_neighbour("Tshirts", "Black", 0.9)
            for _ in range(4))]  # fmt: skip
    rule = LabelRule(duplicate_similarity=0.98, temperature=0.0)
    labels = predict_labels(near, rule, ("article_type", "base_colour"))
    assert labels["article_type"].value == "Shirts" and labels["article_type"].confidence == 1.0
    voted = predict_labels(near, LabelRule(0.995, 0.0), ("article_type",))["article_type"]
    assert voted.value == "Tshirts"
    assert voted.confidence == pytest.approx(3.6 / 4.59)
    # a low temperature lets the nearest outweigh the rest
    sharp = predict_labels(near, LabelRule(0.995, 0.01), ("article_type",))["article_type"]
    assert sharp.value == "Shirts" and sharp.confidence > 0.9


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_a_near_identical_fingerprint_makes_a_duplicate_whatever_the_cosine() -> None:
    photo = Image.linear_gradient("L").rotate(90).convert("RGB").resize((60, 80))
    original = fingerprint_bytes(_jpeg(photo, 95))
    near = [*(_neighbour("Tshirts", "Black", 0.8) for _ in range(3)),
            _neighbour("Shirts", "Navy Blue", 0.7, original)]  # fmt: skip
    rule = LabelRule(duplicate_similarity=0.98, temperature=0.0)
    for copy in (_jpeg(photo, 50), _jpeg(ImageOps.mirror(photo), 95)):  # re-encoded, flipped
        label = predict_labels(near, rule, ("article_type",), fingerprint_bytes(copy))
        assert label["article_type"] == Prediction("Shirts", 1.0)
    turned = photo.rotate(90, expand=True).resize((60, 80))  # another photo
    other = fingerprint_bytes(_jpeg(turned, 95))
    assert predict_labels(near, rule, ("article_type",), other)["article_type"].value == "Tshirts"
    assert predict_labels(near, rule, ("article_type",))["article_type"].value == "Tshirts"
