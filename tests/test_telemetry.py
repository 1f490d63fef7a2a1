"""Metrics, traces and logs: the API's and the model server's /metrics move with a search (the
dispatcher's with an upload: tests/test_ingest.py), a search's trace has spans for the model
call and the database queries, and log lines are JSON with the trace id."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fashion_search.search.service import SearchService
from fashion_search.settings import REPO_ROOT, Settings
from stack.process import ManagedProcess
from stack.service import http_ok
from tests.helpers import api_client, free_port, scrape, start_model_server, start_process


@pytest.fixture(scope="module")
def served(
    search_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Settings]]:
    """A model server and an API of their own, each serving metrics: their settings."""
    port = free_port()
    base = search_settings.replace(
        model_server={"port": port, "address": f"127.0.0.1:{port}"},
    )
    model = base.replace(telemetry={"metrics_port": free_port()})
    api = base.replace(telemetry={"metrics_port": free_port()})
    processes: list[ManagedProcess] = []
    try:
        processes.append(start_model_server(model, tmp_path_factory.mktemp("metrics-model")))
        api_process = start_process(
            "api", ["-m", "functions"], api, tmp_path_factory.mktemp("metrics-api"),
            lambda: http_ok(f"{api.search.api_url}/health"),
        )  # fmt: skip
        processes.append(api_process)
        yield model, api
    finally:
        for process in reversed(processes):
            process.stop()


def _moved(before: dict[str, float], after: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_a_search_moves_the_api_and_model_server_metrics(served: tuple[Settings, Settings]) -> None:
    import httpx

    model, api = served
    api_before, model_before = (
        scrape(api.telemetry.metrics_port),
        scrape(model.telemetry.metrics_port),
    )
    with httpx.Client(base_url=api.search.api_url, timeout=30) as client:
        assert client.get("/search/text", params={"q": "blue shirt", "k": 3}).status_code == 200
        assert client.get("/search/text", params={"q": "blue shirt", "k": 0}).status_code == 422
        assert client.get("/products/999999999").status_code == 404
    api_after, model_after = (
        scrape(api.telemetry.metrics_port),
        scrape(model.telemetry.metrics_port),
    )

    route = 'handler="/search/text",method="GET"'
    assert _moved(api_before, api_after, f'http_requests_total{{{route},status="200"}}') == 1
    assert _moved(api_before, api_after, f'http_requests_total{{{route},status="422"}}') == 1
    product = 'handler="/products/{product_id}",method="GET",status="404"'
    assert _moved(api_before, api_after, f"http_requests_total{{{product}}}") == 1
    assert _moved(api_before, api_after, f"http_request_duration_seconds_count{{{route}}}") == 2
    # The catalog's serving version covers the catalog (a rollout's progress otherwise).
    coverage = [v for k, v in api_after.items() if k.startswith("fashion_search_catalog_coverage")]
    assert coverage == [1.0]
    # The query's text went through one model call of the text tower.
    texts = 'fashion_search_model_batch_size_count{tower="text"}'
    assert _moved(model_before, model_after, texts) >= 1
    seconds = 'fashion_search_model_inference_seconds_sum{tower="text"}'
    assert _moved(model_before, model_after, seconds) > 0
    assert model_after['fashion_search_model_queue_depth{tower="text"}'] == 0


def test_a_search_is_traced_through_the_model_call_and_the_database(
    search_settings: Settings,
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from fashion_search.catalog.db import create_pool
    from fashion_search.catalog.repositories import Catalog
    from fashion_search.embedding_client import EmbeddingClient
    from fashion_search.storage import ObjectStore
    from fashion_search.telemetry.tracing import configure_tracing

    exporter = InMemorySpanExporter()
    assert configure_tracing("test-api", search_settings, exporter) is not None
    # Clients made after tracing started: their calls and statements are traced.
    with (
        create_pool(search_settings) as pool,
        EmbeddingClient(search_settings.model_server.address) as embedder,
    ):
        service = SearchService(
            search_settings, Catalog.of(pool), ObjectStore(search_settings), embedder
        )
        exporter.clear()
        response = api_client(service).get("/search/text", params={"q": "red dress", "k": 3})
    spans = exporter.get_finished_spans()
    exporter.shutdown()  # the rest of this test process's spans are not kept
    assert response.status_code == 200
    [request] = [s for s in spans if s.name == "GET /search/text"]
    trace_id = request.context.trace_id
    mine = [s for s in spans if s.context.trace_id == trace_id]
    model_calls = [s for s in mine if s.name.endswith("EmbeddingService/EmbedTexts")]
    queries = [s for s in mine if (s.attributes or {}).get("db.system") == "postgresql"]
    assert model_calls, [s.name for s in mine]
    assert queries, [s.name for s in mine]
    assert all(s.parent is not None for s in [*model_calls, *queries])  # inside the request


def test_log_lines_are_json_with_the_trace_id(tmp_path: Path) -> None:
    script = """
import logging
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from fashion_search.settings import Settings
from fashion_search.telemetry.logs import configure_logging
from fashion_search.telemetry.tracing import configure_tracing

settings = Settings()
configure_tracing("log-test", settings, InMemorySpanExporter())
configure_logging(settings)
with trace.get_tracer("t").start_as_current_span("work") as span:
    logging.getLogger("fashion_search.test").warning("inside %s", "a span")
    print(format(span.get_span_context().trace_id, "032x"), flush=True)
logging.getLogger("fashion_search.test").info("outside")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
        timeout=60, check=True,
    )  # fmt: skip
    inside, outside = (json.loads(line) for line in result.stderr.splitlines()[-2:])
    assert inside["message"] == "inside a span" and inside["level"] == "WARNING"
    assert inside["logger"] == "fashion_search.test"
    assert inside["trace_id"] == result.stdout.strip() != "0" * 32
    assert outside["message"] == "outside" and outside["trace_id"] == "0"
