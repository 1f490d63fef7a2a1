"""``docker compose up`` for real: the engine started by the stack, every image built here (or
pulled), the whole system from docker-compose.yml with a catalog slice and a tiny model, then
used through the published ports only, as a user with Docker would; ``down -v`` leaves nothing.

Runs alone (``make test-compose``; .ci/run after the native tests): it publishes the native
stack's ports.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from PIL import Image

from fashion_search.settings import REPO_ROOT, Settings
from stack.compose_cli import compose_command
from stack.docker import DockerEngine, host_state
from stack.secrets import S3_PASSWORDS, S3_UPLOADER_USER, parse_env
from stack.service import require_tool

pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

PROJECT = "fs-compose-test"
API = "http://127.0.0.1:18000"
ROWS = 300
#: The services that run once and exit 0; every other one must be healthy (or running).
ONE_SHOT = {"secrets", "setup", "catalog", "model-init", "embed"}
#: The README's example searches (README.md, "Deploying").
EXAMPLES = (
    "/search/text?q=navy+blue+casual+shirt+for+men&k=5",
    "/search/text?q=silver+watch&articleType=Watches&gender=Women",
)


@dataclass
class Deployment:
    """The running compose project and what a user reads from it."""

    compose: list[str]
    secrets: dict[str, str]

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.secrets["FS_SECRET_UI_API_KEY"]}

    def run(self, *args: str, timeout_s: float = 600) -> str:
        """``docker compose ARGS``; its stdout (AssertionError with its output on failure)."""
        result = subprocess.run(
            [*self.compose, *args], capture_output=True, text=True, timeout=timeout_s,
            check=False, cwd=REPO_ROOT,
        )  # fmt: skip
        assert result.returncode == 0, f"compose {args}: {result.stdout}{result.stderr}"
        return result.stdout


def _states(deployment: Deployment) -> dict[str, dict[str, Any]]:
    lines = deployment.run("ps", "-a", "--format", "json").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return {row["Service"]: row for row in rows}


def _wait_until_up(deployment: Deployment, timeout_s: float) -> None:
    """Every one-shot exited 0 and every other service healthy (or running, without a check)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = _states(deployment)
        failed = [
            name
            for name, row in states.items()
            if row["State"] == "exited" and (name not in ONE_SHOT or row["ExitCode"] != 0)
        ]
        if failed:
            logs = deployment.run("logs", "--no-color", "--tail", "60", *failed)
            raise AssertionError(f"{failed} failed:\n{logs}")
        waiting = [
            name
            for name, row in states.items()
            if not (
                (name in ONE_SHOT and row["State"] == "exited")
                or (row["State"] == "running" and row.get("Health") in ("healthy", ""))
            )
        ]
        if not waiting and states:
            return
        if time.monotonic() > deadline:
            logs = deployment.run("logs", "--no-color", "--tail", "40", *waiting)
            raise AssertionError(f"not up after {timeout_s:.0f} s: {waiting}\n{logs}")
        time.sleep(5)


def _host() -> dict[str, Any]:
    """The host as dockerd changes it, its rules' counters and comments left out."""
    state = host_state()
    rules = state["iptables"].splitlines()
    state["iptables"] = [re.sub(r"\[\d+:\d+\]", "", line) for line in rules if line[:1] != "#"]
    return state


def _leftovers(docker: str) -> list[str]:
    """Containers, networks and volumes of the test's project."""
    found = []
    for kind in ("container", "network", "volume"):
        listing = subprocess.run(
            [docker, kind, "ls", *(["-a"] if kind == "container" else []), "-q",
             "--filter", f"label=com.docker.compose.project={PROJECT}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        found += [f"{kind} {name}" for name in listing]
    return found


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """The engine (started unless one runs; then stopped, the host as before), the images, and
    the compose project up with ROWS products and the tiny model; ``down -v`` after."""
    settings = Settings()
    dataset = Path(settings.dataset_source)
    if not dataset.is_file():
        pytest.skip(f"needs the dataset as a local parquet file (FS_DATASET_SOURCE={dataset})")
    timings: dict[str, float] = {}
    engine = DockerEngine(settings)
    t0 = time.perf_counter()
    engine.install()
    host = _host()
    started_engine = engine.start()
    timings["engine"] = time.perf_counter() - t0
    try:
        yield from _deploy(settings, dataset, timings)
    finally:
        print("compose timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
        if started_engine:
            assert engine.stop()
            assert _host() == host


def _deploy(settings: Settings, dataset: Path, timings: dict[str, float]) -> Iterator[Deployment]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stack.images", "build"], check=True, cwd=REPO_ROOT)
    timings["images"] = time.perf_counter() - t0
    environ = {
        "FS_COMPOSE_DATASET_DIR": str(dataset.parent),
        "FS_COMPOSE_DATASET": f"/datasets/{dataset.name}",
        "FS_COMPOSE_LOAD_ARGS": f"--limit {ROWS}",
        "FS_COMPOSE_MODEL": "fashion-tiny",
        "FS_COMPOSE_TRAIN_ARGS": f"--epochs 1 --limit {ROWS}",
    }
    os.environ.update(environ)
    compose_file = str(REPO_ROOT / "docker-compose.yml")
    deployment = Deployment([*compose_command(settings), "-p", PROJECT, "-f", compose_file], {})
    try:
        t0 = time.perf_counter()
        deployment.run("up", "-d", "--no-build", timeout_s=900)
        _wait_until_up(deployment, timeout_s=1500)
        timings["up"] = time.perf_counter() - t0
        secrets = deployment.run("run", "--rm", "--no-deps", "secrets", "cat",
                                 "/secrets/all/secrets.env")  # fmt: skip
        deployment.secrets = parse_env(secrets)
        t0 = time.perf_counter()
        yield deployment
        timings["checks"] = time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        deployment.run("down", "-v", "--remove-orphans", timeout_s=300)
        timings["down"] = time.perf_counter() - t0
        for name in environ:
            os.environ.pop(name, None)
        assert not _leftovers(require_tool("docker"))


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
    # The output topic, read inside the network as the owner (Kafka is not published).
    script = (
        "import json, sys, time, uuid\n"
        "from confluent_kafka import Consumer\n"
        "from fashion_search.ingest.publisher import kafka_config\n"
        "from fashion_search.settings import get_settings\n"
        "s = get_settings()\n"
        "c = Consumer(kafka_config(s, {'group.id': uuid.uuid4().hex,"
        " 'auto.offset.reset': 'earliest'}))\n"
        "c.subscribe([s.kafka.output_topic])\n"
        "end = time.monotonic() + 120\n"
        "while time.monotonic() < end:\n"
        "    m = c.poll(1)\n"
        "    if m is not None and not m.error():\n"
        "        v = json.loads(m.value())\n"
        f"        if v.get('key') == {key!r}:\n"
        "            print(json.dumps(v)); sys.exit(0)\n"
        "sys.exit('no output message')\n"
    )
    output = deployment.run("run", "--rm", "--no-deps", "setup", "python", "-c", script)
    message = json.loads(output.strip().splitlines()[-1])
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
