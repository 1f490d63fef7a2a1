"""The serverless paths against the FastAPI app, in one run beside a compose deployment whose
LocalStack has the functions (``docker compose up -d``, ``make lambda``,
``python -m stack.lambda_runtime deploy``):

- the text search function's first request and warm latency under ``sam local start-api`` (its
  key authorizer included) and through LocalStack's Lambda ``Invoke`` API, against the compose
  ``api`` service (the FastAPI app) on the same query;
- upload -> output message latency through LocalStack (S3 -> SQS -> its event source mapping ->
  the function's container) and through MinIO -> Kafka -> the dispatcher.

    .venv/bin/python -m bench.functions [-p fashion-search] [--requests 20] [--uploads 20]
        [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
from PIL import Image

from bench.report import Report, Table, add_markdown_option
from bench.search import percentile
from fashion_search.settings import REPO_ROOT, get_settings
from stack.compose_cli import COMPOSE_FILE, compose_command, deployment_secrets
from stack.compose_outputs import upload_messages
from stack.lambda_runtime import beside_compose, deployed_function, localstack, start_api
from stack.secrets import S3_PASSWORDS, S3_UPLOADER_USER, UI_API_KEY

API = "http://127.0.0.1:18000"
MINIO = "http://127.0.0.1:19000"
QUERY = "/search/text?q=navy+blue+casual+shirt+for+men&k=5"


def timed(call: Callable[[], None], n: int) -> tuple[float, list[float]]:
    """Seconds of the first call, and of ``n`` more."""
    started = time.perf_counter()
    call()
    first = time.perf_counter() - started
    warm = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        warm.append(time.perf_counter() - started)
    return first, warm


def get_ok(url: str, headers: dict[str, str]) -> Callable[[], None]:
    def call() -> None:
        answer = httpx.get(url, headers=headers, timeout=300)
        if answer.status_code != 200 or not answer.json()["hits"]:
            raise SystemExit(f"{url}: {answer.status_code} {answer.text[:300]}")

    return call


def invoke_text_search(key: str) -> Callable[[], None]:
    """Invoke the deployed text search function on LocalStack with the GET event."""
    settings = get_settings()
    lambdas = localstack("lambda", settings)
    name = deployed_function("TextSearchFunction", settings)
    event = json.loads((REPO_ROOT / "events" / "text_search_get.json").read_text())
    event["headers"]["x-api-key"] = key

    def call() -> None:
        answer = lambdas.invoke(FunctionName=name, Payload=json.dumps(event).encode())
        result = json.loads(answer["Payload"].read())
        if "FunctionError" in answer or result.get("statusCode") != 200:
            raise SystemExit(f"LocalStack invoke: {result}")

    return call


def upload_latencies(s3: Any, compose: list[str], uploads: int, seed: int) -> list[float]:
    """Seconds from each PUT's return to its message on the output topic."""
    prefix, rng, put_at = f"bench-{uuid.uuid4().hex[:6]}/", random.Random(seed), {}
    for i in range(uploads):
        image = io.BytesIO()
        Image.frombytes("RGB", (48, 64), rng.randbytes(48 * 64 * 3)).save(image, format="JPEG")
        key = f"{prefix}{i:03d}.jpg"
        s3.put_object(Bucket="fashion-uploads", Key=key, Body=image.getvalue())
        put_at[key] = time.time()
        time.sleep(0.5)  # one upload at a time: latency, not throughput
    messages = upload_messages(compose, prefix, uploads, timeout_s=600)
    return [m["timestamp_ms"] / 1000 - put_at[m["key"]] for m in messages if m["key"] in put_at]


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.functions", description=__doc__)
    parser.add_argument("-p", "--project", default="fashion-search", help="compose project")
    parser.add_argument("--requests", type=int, default=20, help="warm requests per path")
    parser.add_argument("--uploads", type=int, default=20, help="uploads per path")
    add_markdown_option(parser)
    args = parser.parse_args(argv)
    settings = get_settings()
    compose = [*compose_command(settings), "-p", args.project, "-f", str(COMPOSE_FILE)]
    beside = beside_compose(compose, deployment_secrets(compose))
    headers = {"X-API-Key": beside.secrets[UI_API_KEY]}
    report = Report("bench.functions")
    health = httpx.get(f"{API}/health", timeout=60).json()
    report.add(
        f"Beside compose project `{args.project}` ({health['catalog']['products']} products,"
        f" model {health['modelServer']['model']} v{health['modelServer']['version']}). First"
        " request: the first of this run (a cold start unless the path already ran); the"
        " uploads are random images, one at a time."
    )

    rows: list[tuple[str, float, list[float]]] = []
    rows.append(("FastAPI app (compose api)", *timed(get_ok(API + QUERY, headers), args.requests)))
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / "env.json"
        env_file.write_text(json.dumps(beside.env_vars()))
        with start_api(settings, env_file, beside.network) as url:
            rows.append(
                ("sam local start-api", *timed(get_ok(url + QUERY, headers), args.requests))
            )
    invoke = invoke_text_search(headers["X-API-Key"])
    rows.append(("LocalStack Lambda Invoke", *timed(invoke, args.requests)))
    baseline = percentile(rows[0][2], 50)
    table = Table(
        f"text search '{QUERY}': first request and {args.requests} warm ones",
        ["path", "first s", "warm p50 ms", "warm p95 ms", "p50 / FastAPI"],
    )
    for name, first, warm in rows:
        p50 = percentile(warm, 50)
        table.rows.append(
            [name, first, p50 * 1000, percentile(warm, 95) * 1000, f"{p50 / baseline:.1f}x"]
        )
    report.add(table)

    minio = boto3.client(
        "s3", endpoint_url=MINIO, region_name="us-east-1", aws_access_key_id=S3_UPLOADER_USER,
        aws_secret_access_key=beside.secrets[S3_PASSWORDS[S3_UPLOADER_USER]],
    )  # fmt: skip
    local_s3 = localstack("s3", settings)
    paths = [
        ("MinIO -> Kafka -> dispatcher", upload_latencies(minio, compose, args.uploads, 1)),
        ("LocalStack S3 -> SQS -> Lambda", upload_latencies(local_s3, compose, args.uploads, 2)),
    ]
    baseline = percentile(paths[0][1], 50)
    table = Table(
        f"upload -> output message, {args.uploads} uploads 0.5 s apart",
        ["path", "messages", "p50 s", "p95 s", "p50 / MinIO path"],
    )
    for name, latencies in paths:
        p50 = percentile(latencies, 50)
        table.rows.append(
            [name, len(latencies), p50, percentile(latencies, 95), f"{p50 / baseline:.1f}x"]
        )
    report.add(table)
    report.write_markdown(args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
