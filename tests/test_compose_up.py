"""``docker compose up`` for real: the engine started by the stack, every image built here (or
pulled), the whole system from docker-compose.yml with a catalog slice and a tiny model, then
used through the published ports only, as a user with Docker would; ``down -v`` leaves nothing.

Runs alone (``make test-compose``; .ci/run after the native tests): it publishes the native
stack's ports.
"""

from __future__ import annotations

import io
import time
import uuid

import boto3
import httpx
import pytest
from PIL import Image

from stack.secrets import S3_PASSWORDS, S3_UPLOADER_USER
from tests.compose_deployment import API, EXAMPLES, Deployment

pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]


def test_the_readme_searches_return_hits(deployment: Deployment) -> None:
    for path in EXAMPLES:
        response = httpx.get(f"{API}{path}", headers=deployment.headers, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["hits"], path


def test_graphql_answers(deployment: Deployment) -> None:
    query = '{ searchByText(query: "red dress", k: 3) { hits { product { id } score } } }'
    response = httpx.post(
        f"{API}/graphql", json={"query": query}, headers=deployment.headers, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    assert body["data"]["searchByText"]["hits"]


def test_bad_requests_get_their_4xx(deployment: Deployment) -> None:
    response = httpx.get(f"{API}/search/text?q=&k=5", headers=deployment.headers, timeout=30)
    assert response.status_code == 422 and response.json()
    response = httpx.get(f"{API}/search/text?q=red+dress", timeout=30)  # no API key
    assert response.status_code == 401


def test_an_upload_becomes_a_product_and_an_output_message(deployment: Deployment) -> None:
    s3 = boto3.client(
        "s3", endpoint_url="http://127.0.0.1:19000", region_name="us-east-1",
        aws_access_key_id=S3_UPLOADER_USER,
        aws_secret_access_key=deployment.secrets[S3_PASSWORDS[S3_UPLOADER_USER]],
    )  # fmt: skip
    image = io.BytesIO()
    Image.new("RGB", (60, 80), (200, 30, 30)).save(image, format="JPEG")
    key = f"compose-test/{uuid.uuid4().hex[:8]}.jpg"
    s3.put_object(Bucket="fashion-uploads", Key=key, Body=image.getvalue())
    [message] = deployment.messages(key, 1)
    assert message["status"] == "created", message
    [result] = message["results"]
    product = httpx.get(f"{API}/products/{result['id']}", headers=deployment.headers, timeout=30)
    assert product.status_code == 200, product.text


def test_the_other_front_ends_answer(deployment: Deployment) -> None:
    for url in (
        "http://127.0.0.1:18501/_stcore/health",  # the UI
        "http://127.0.0.1:18080/api/v2/monitor/health",  # Airflow
        "http://127.0.0.1:15000/health",  # MLflow
    ):
        assert httpx.get(url, timeout=30).status_code == 200, url


def test_prometheus_scrapes_the_api(deployment: Deployment) -> None:
    deadline = time.monotonic() + 90
    while True:
        targets = httpx.get("http://127.0.0.1:19090/api/v1/targets", timeout=30).json()
        health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
        if health.get("api") == "up" or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert health.get("api") == "up", health
