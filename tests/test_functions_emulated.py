"""The functions of template.yaml in a real Lambda runtime, beside the compose deployment: the
runtime's image as ``python -m stack.images build`` makes it (no registry), the artifacts of
``make lambda``, AWS SAM CLI's ``sam local invoke`` of every function with its event from
``events/``, ``sam local start-api`` (the HTTP API with its key authorizer) answering the
README's searches and GraphQL as the FastAPI app (the compose ``api`` service) does, and
template.yaml deployed to the deployment's LocalStack with ``sam deploy``: 50 uploads through
its event source mapping, a database outage retried through it, the search functions over HTTP
through their function URLs.

The functions join the deployment's network with the environment of their role's service
(``stack.lambda_runtime env``: the search API's credentials, the upload path's). Runs with the
compose tests (``make test-compose``; .ci/run), which start the engine.
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from PIL import Image

from fashion_search.settings import REPO_ROOT, Settings
from stack.lambda_runtime import (
    BUILD,
    ComposeFunctions,
    beside_compose,
    deploy,
    deployed_function,
    function_roles,
    function_url,
    localstack,
    sam_environment,
    sam_local,
    start_api,
)
from stack.secrets import S3_PASSWORDS, S3_UPLOADER_USER
from tests.compose_deployment import API, EXAMPLES, Deployment

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

SETTINGS = Settings()
EVENTS = REPO_ROOT / "events"
#: Each function's events (events/): what ``sam local invoke`` gives it.
FUNCTION_EVENTS = {
    "HealthFunction": ["health.json"],
    "TextSearchFunction": ["text_search_get.json", "text_search_post.json"],
    "ImageSearchFunction": ["image_search_key.json"],
    "MetadataFunction": ["product_get.json", "graphql_products.json"],
}
GRAPHQL = '{ searchByText(query: "red dress", k: 3) { hits { product { id } score } } }'


@dataclass
class Functions:
    """The functions' settings for ``sam local`` and the deployment they run beside."""

    deployment: Deployment
    beside: ComposeFunctions
    env_file: Path
    results: dict[tuple[str, str], Any] = field(default_factory=dict)

    @property
    def network(self) -> str:
        return self.beside.network

    def invoke(self, function: str, event: dict[str, Any], tmp: Path) -> Any:
        """``sam local invoke FUNCTION`` with ``event``; the function's result (remembered:
        each invocation starts a container, ~25 s here)."""
        text = json.dumps(event)
        if (function, text) not in self.results:
            path = tmp / f"{function}-{uuid.uuid4().hex[:6]}.json"
            path.write_text(text)
            result = subprocess.run(
                sam_local(SETTINGS, "invoke", self.env_file, self.network, function,
                          "--event", str(path)),
                capture_output=True, text=True, timeout=300, check=False, cwd=REPO_ROOT,
                env=sam_environment(SETTINGS),
            )  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            self.results[function, text] = json.loads(result.stdout.strip().splitlines()[-1])
        return self.results[function, text]


@pytest.fixture(scope="module")
def functions(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Functions:
    """The artifacts built (``make lambda``'s script) and the functions' environment."""
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "build_lambda.py"), "--no-zip"],
        check=True, capture_output=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert set(function_roles().values()) <= {p.name for p in BUILD.iterdir()}
    beside = beside_compose(deployment.compose, deployment.secrets)
    env_file = tmp_path_factory.mktemp("sam") / "env.json"
    env_file.write_text(json.dumps(beside.env_vars()))
    return Functions(deployment, beside, env_file)


def _event(name: str, deployment: Deployment) -> dict[str, Any]:
    """An API event of events/ with the deployment's key (the function checks it too)."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    event["headers"]["x-api-key"] = deployment.headers["X-API-Key"]
    return event


def _app_answer(event: dict[str, Any], deployment: Deployment) -> httpx.Response:
    """The same request to the FastAPI app."""
    http = event["requestContext"]["http"]
    return httpx.request(
        http["method"], f"{API}{event['rawPath']}?{event['rawQueryString']}",
        content=event.get("body") or None, headers={**deployment.headers,
        "content-type": "application/json"}, timeout=60,
    )  # fmt: skip


def _unsigned(body: dict[str, Any]) -> dict[str, Any]:
    """A product without its presigned image URL (signed for the endpoint each side uses)."""
    return {k: v for k, v in body.items() if k != "imageUrl"}


def _hits(body: dict[str, Any]) -> list[tuple[int, float]]:
    """(id, score) of each hit: REST's products, or GraphQL's ``{product, score}``."""
    return [(hit.get("product", hit)["id"], round(hit["score"], 4)) for hit in body["hits"]]


def test_every_function_runs_in_the_lambda_runtime_with_its_events(
    functions: Functions, tmp_path: Path
) -> None:
    """Each HTTP function's answer to its events is the FastAPI app's for the same request."""
    assert set(FUNCTION_EVENTS) | {"AuthorizerFunction", "BucketEventFunction"} == set(
        function_roles()
    )
    deployment = functions.deployment
    for function, names in FUNCTION_EVENTS.items():
        for name in names:
            event = _event(name, deployment)
            result = functions.invoke(function, event, tmp_path)
            assert result["statusCode"] == 200, (function, name, result)
            body, expected = json.loads(result["body"]), _app_answer(event, deployment)
            assert expected.status_code == 200, expected.text
            if "hits" in body:
                assert body["hits"], (function, name)
                assert _hits(body) == _hits(expected.json()), (function, name)
            elif function != "HealthFunction":  # replica lag and timings differ
                assert _unsigned(body) == _unsigned(expected.json()), (function, name)


#: The deployment's services as the host reaches them (its published ports).
PUBLISHED = {"postgres:5432": "127.0.0.1:15432", "http://minio:9000": "http://127.0.0.1:19000",
             "model-server:50051": "127.0.0.1:50051"}  # fmt: skip


def test_local_invoke_answers_as_sam_local_invoke(functions: Functions, tmp_path: Path) -> None:
    """The no-Docker fallback (the handler in this interpreter, on the deployment's published
    ports) gives ``sam local invoke``'s answer for the same event."""
    environment = {}
    for key, value in functions.beside.roles["api"].items():
        for inside, outside in PUBLISHED.items():
            value = value.replace(inside, outside)
        environment[key] = value
    environment["FS_DATABASE_REPLICAS"] = ""  # the replica is not published
    for function, name in (("MetadataFunction", "graphql_products.json"),
                           ("TextSearchFunction", "text_search_post.json")):  # fmt: skip
        event = _event(name, functions.deployment)
        path = tmp_path / name
        path.write_text(json.dumps(event))
        local = subprocess.run(
            [sys.executable, "-m", "functions.local_invoke", function, "--event", str(path)],
            capture_output=True, text=True, timeout=300, check=False, cwd=REPO_ROOT,
            env={**os.environ, **environment},
        )  # fmt: skip
        assert local.returncode == 0, local.stderr[-2000:]
        local_body = json.loads(json.loads(local.stdout)["body"])
        sam_body = json.loads(functions.invoke(function, event, tmp_path)["body"])
        if "hits" in sam_body:
            assert _hits(local_body) == _hits(sam_body) != [], name
        else:
            assert local_body == sam_body, name


def test_the_authorizer_lets_valid_keys_through_only(functions: Functions, tmp_path: Path) -> None:
    event = _event("health.json", functions.deployment)
    assert functions.invoke("AuthorizerFunction", event, tmp_path) == {
        "isAuthorized": True, "context": {"scope": "search"},
    }  # fmt: skip
    event["headers"]["x-api-key"] = "fs_not-a-key"
    assert functions.invoke("AuthorizerFunction", event, tmp_path)["isAuthorized"] is False


def test_the_bucket_event_function_stores_an_upload_and_dead_letters_a_corrupt_one(
    functions: Functions, tmp_path: Path
) -> None:
    secrets = functions.deployment.secrets
    s3 = boto3.client(
        "s3", endpoint_url="http://127.0.0.1:19000", region_name="us-east-1",
        aws_access_key_id=S3_UPLOADER_USER,
        aws_secret_access_key=secrets[S3_PASSWORDS[S3_UPLOADER_USER]],
    )  # fmt: skip
    image = io.BytesIO()
    Image.new("RGB", (60, 80), (30, 30, 200)).save(image, format="JPEG")
    template = json.loads((EVENTS / "s3_put_upload.json").read_text())
    # "duplicate" when the dispatcher (MinIO -> Kafka) stored the upload first
    cases = ((image.getvalue(), {"created", "duplicate"}), (b"GIF89a", {"dead-letter"}))
    for body, expected in cases:
        key = f"sam-invoke/{uuid.uuid4().hex[:8]}.jpg"
        etag = s3.put_object(Bucket="fashion-uploads", Key=key, Body=body)["ETag"].strip('"')
        event = copy.deepcopy(template)
        event["Records"][0]["s3"]["object"].update(key=key, size=len(body), eTag=etag)
        counts = functions.invoke("BucketEventFunction", event, tmp_path)
        assert sum(counts.values()) == 1 and set(counts) <= expected, counts


@pytest.fixture(scope="module")
def api_url(functions: Functions) -> Iterator[str]:
    """``sam local start-api`` beside the deployment; its URL."""
    with start_api(SETTINGS, functions.env_file, functions.network) as url:
        yield url


def test_start_api_answers_the_readme_searches_as_the_fastapi_app(
    api_url: str, functions: Functions
) -> None:
    headers = functions.deployment.headers
    for path in EXAMPLES:
        answer = httpx.get(f"{api_url}{path}", headers=headers, timeout=120)
        expected = httpx.get(f"{API}{path}", headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        assert _hits(answer.json()) and _hits(answer.json()) == _hits(expected.json()), path
    graphql = {"query": GRAPHQL}
    answer = httpx.post(f"{api_url}/graphql", json=graphql, headers=headers, timeout=120)
    expected = httpx.post(f"{API}/graphql", json=graphql, headers=headers, timeout=60)
    assert answer.status_code == 200 and answer.json() == expected.json(), answer.text


def test_start_api_refuses_requests_without_a_valid_key(api_url: str) -> None:
    """The HTTP API's Lambda authorizer, as API Gateway runs it (401 without the header, 403
    with a key the catalog does not know)."""
    assert httpx.get(f"{api_url}{EXAMPLES[0]}", timeout=120).status_code == 401
    bad = {"X-API-Key": "fs_not-a-key"}
    assert httpx.get(f"{api_url}{EXAMPLES[0]}", headers=bad, timeout=120).status_code == 403


# --- template.yaml deployed to LocalStack: S3 -> SQS -> its event source mapping -> Lambda ------

#: Uploads through the path: all but the last valid (distinct images), the last corrupt.
UPLOADS = 50
#: The queue's visibility timeout for the tests: a batch reported failed comes back after it.
VISIBILITY_S = 65


@pytest.fixture(scope="module")
def on_localstack(functions: Functions) -> Functions:
    """template.yaml deployed with ``sam deploy`` to the deployment's LocalStack."""
    deploy(SETTINGS, functions.beside, UploadsVisibilityTimeout=str(VISIBILITY_S))
    return functions


def _upload(prefix: str, bodies: list[bytes]) -> list[str]:
    s3, keys = localstack("s3", SETTINGS), []
    for i, body in enumerate(bodies):
        keys.append(f"{prefix}{i:03d}.jpg")
        s3.put_object(Bucket="fashion-uploads", Key=keys[-1], Body=body)
    return keys


def _images(count: int, seed: int) -> list[bytes]:
    """Distinct JPEG images (random pixels)."""
    rng, images = random.Random(seed), []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.frombytes("RGB", (48, 64), rng.randbytes(48 * 64 * 3)).save(buffer, format="JPEG")
        images.append(buffer.getvalue())
    return images


def _check_created(deployment: Deployment, messages: list[dict[str, Any]], keys: list[str]) -> None:
    """Each key once on the output topic as a new product the API serves."""
    output = [m for m in messages if m["topic"] == SETTINGS.kafka.output_topic]
    assert sorted(m["key"] for m in output) == sorted(keys)
    assert {m["status"] for m in output} == {"created"}
    ids = [result["id"] for m in output for result in m["results"]]
    assert len(ids) == len(set(ids)) == len(keys)  # none duplicated
    for product in ids:
        answer = httpx.get(f"{API}/products/{product}", headers=deployment.headers, timeout=30)
        assert answer.status_code == 200, answer.text


def test_the_template_deploys_with_its_event_source_mapping(on_localstack: Functions) -> None:
    lambdas = localstack("lambda", SETTINGS)
    for function in function_roles():
        assert deployed_function(function, SETTINGS)
    [mapping] = lambdas.list_event_source_mappings()["EventSourceMappings"]
    assert mapping["FunctionArn"].endswith(deployed_function("BucketEventFunction", SETTINGS))
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 10 and mapping["State"] == "Enabled"


def test_uploads_reach_the_catalog_through_localstack_lambda(on_localstack: Functions) -> None:
    """S3 PUT -> SQS -> the event source mapping -> BucketEventFunction in its Lambda container
    -> the product in PostgreSQL and a message on the output topic; a corrupt one dead-lettered."""
    deployment = on_localstack.deployment
    prefix = f"localstack/{uuid.uuid4().hex[:6]}/"
    keys = _upload(prefix, [*_images(UPLOADS - 1, seed=1), b"GIF89a broken"])
    messages = deployment.messages(prefix, UPLOADS, timeout_s=300)
    _check_created(deployment, messages, keys[:-1])
    dead = [m for m in messages if m["topic"] == SETTINGS.kafka.dead_letter_topic]
    assert [(m["key"], m["reason"]) for m in dead] == [(keys[-1], "not-an-image")]


def test_a_database_outage_loses_no_upload(on_localstack: Functions) -> None:
    """PostgreSQL down longer than the function's retry budget: the function reports the batch
    failed, the mapping leaves it on the queue, it comes back after the visibility timeout and
    is stored then; nothing is dead-lettered."""
    deployment = on_localstack.deployment
    prefix = f"outage/{uuid.uuid4().hex[:6]}/"
    deployment.run("stop", "postgres")
    try:
        keys = _upload(prefix, _images(5, seed=2))
        time.sleep(SETTINGS.ingest.retry_budget_s + 15)  # the batch has failed by now
    finally:
        deployment.run("start", "postgres")
    messages = deployment.messages(prefix, len(keys), timeout_s=VISIBILITY_S * 3)
    _check_created(deployment, messages, keys)
    sqs = localstack("sqs", SETTINGS)
    dlq = sqs.get_queue_url(QueueName=f"{SETTINGS.ingest.uploads_queue}-dlq")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_the_search_functions_answer_over_http_on_localstack(on_localstack: Functions) -> None:
    """LocalStack's community edition has no HTTP API (API Gateway v2): the text search, image
    search and metadata functions answer through their function URLs on LocalStack's endpoint,
    with the same hits as the FastAPI app, and check the key themselves."""
    headers = on_localstack.deployment.headers
    text, text_host = function_url("TextSearchFunction", SETTINGS)
    for path in EXAMPLES:
        answer = httpx.get(f"{text}{path}", headers={**headers, "Host": text_host}, timeout=120)
        expected = httpx.get(f"{API}{path}", headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        assert _hits(answer.json()) and _hits(answer.json()) == _hits(expected.json()), path
    keyless = httpx.get(f"{text}{EXAMPLES[0]}", headers={"Host": text_host}, timeout=120)
    assert keyless.status_code == 401, keyless.text
    image, image_host = function_url("ImageSearchFunction", SETTINGS)
    body = {"productId": answer.json()["hits"][0]["id"], "k": 5}  # a product of this catalog
    answer = httpx.post(f"{image}/search/image", json=body,
                        headers={**headers, "Host": image_host}, timeout=120)  # fmt: skip
    expected = httpx.post(f"{API}/search/image", json=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    assert _hits(answer.json()) and _hits(answer.json()) == _hits(expected.json())
    metadata, metadata_host = function_url("MetadataFunction", SETTINGS)
    graphql = {"query": GRAPHQL}
    answer = httpx.post(f"{metadata}/graphql", json=graphql,
                        headers={**headers, "Host": metadata_host}, timeout=120)  # fmt: skip
    expected = httpx.post(f"{API}/graphql", json=graphql, headers=headers, timeout=60)
    assert answer.status_code == 200 and answer.json() == expected.json(), answer.text
