"""Search benchmark over HTTP against the running stack (``make up``: catalog loaded and
embedded, model server, API):

    .venv/bin/python -m bench.search --requests 200

Text and image search latency p50/p95 and requests/s at concurrency 1, 8 and 32, with the
server's own breakdown (model, database, presigning, rest = HTTP + JSON), next to the same
search called in-process (no HTTP) as the baseline; suggestions (``/suggest``) for prefixes of
titles and attribute values, as typed and with one typo; and HNSW recall@10 against exact
search on the same queries (``--runs`` picks some). Before and after, the served text tower
alone (see :func:`text_tower_timer`) reads how fast the machine runs at the time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np
import urllib3

from bench.report import Report, Table, add_markdown_option
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.model.data import attribute_caption
from fashion_search.model.registry import configure_mlflow
from fashion_search.model.tokens import cut_tokens
from fashion_search.search.service import SearchService
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import ObjectStore
from model_server.loader import fetch_version, resolve
from model_server.runtime import OnnxSession
from model_server.tokenizer import TextTokenizer


class HttpClient:
    """Keep-alive HTTP/1.1 connections from the standard library, one per thread. A load
    generator should add as little as it can to what it times: httpx (its HTTP parsing is
    pure Python) added 0.6-1.0 ms to each text search on 2 cores (README, Search)."""

    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        url = urlsplit(base_url)
        self._address = (url.hostname or "127.0.0.1", url.port or 80)
        self._timeout_s = timeout_s  # of each socket operation: a hang raises TimeoutError
        self._local = threading.local()

    def exchange(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """The status and body, whatever the status; a connection that fails (timeout, reset)
        is closed, so the next request opens a fresh one, and the error raised."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(
                *self._address, timeout=self._timeout_s
            )
        try:
            try:
                connection.request(method, path, body, headers or {})
                response = connection.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()  # the server dropped the idle connection: one more try, anew
                connection.request(method, path, body, headers or {})
                response = connection.getresponse()
            return response.status, response.read()
        except BaseException:
            connection.close()
            raise

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The JSON answer; an error for an HTTP error status."""
        status, data = self.exchange(method, path, body, headers)
        if status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {status} {data[:300]!r}")
        return json.loads(data)  # type: ignore[no-any-return]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (NaN for none)."""
    return float(np.percentile(values, q)) if values else float("nan")


def timed_run(call: Callable[[int], dict[str, Any]], n: int, concurrency: int) -> dict[str, float]:
    """``n`` calls on ``concurrency`` threads: latency percentiles, rate, mean breakdown."""
    latencies: list[float] = []
    parts: dict[str, list[float]] = {}

    def one(i: int) -> None:
        started = time.perf_counter()
        body = call(i)
        latencies.append((time.perf_counter() - started) * 1000)
        for name, ms in body.get("timingsMs", {}).items():
            parts.setdefault(name, []).append(ms)

    call(0)  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    took = time.perf_counter() - started
    result = {
        "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99), "rps": n / took,
    }  # fmt: skip
    result.update({name: statistics.mean(values) for name, values in parts.items()})
    result["rest"] = statistics.mean(latencies) - sum(statistics.mean(v) for v in parts.values())
    return result


def text_tower_timer(settings: Settings, query: str) -> Callable[[], float]:
    """A function returning the median ms of the served text tower alone in this process (ONNX
    Runtime, 1 thread, one query at a time, 6 ms apart): how fast the machine runs right now.
    On these shared VMs the same work runs 30-50% slower for minutes at a time; this tells such
    runs apart."""
    client = configure_mlflow(settings)
    exported = fetch_version(settings, client, resolve(settings, client))
    session = OnnxSession(exported.files["text"], threads=1)
    tokens = cut_tokens(TextTokenizer.from_file(exported.files["tokenizer"])([query]))

    def median_ms() -> float:
        times = []
        for i in range(110):
            started = time.perf_counter()
            session.run(tokens)
            if i >= 10:  # the first runs warm up
                times.append((time.perf_counter() - started) * 1000)
            time.sleep(0.006)
        return statistics.median(times)

    return median_ms


def _suggest_table(http: HttpClient, catalog: Catalog, typed: list[str], typos: list[str]) -> Table:
    """``/suggest`` at concurrency 1 over HTTP, next to the catalog's lookup in process."""
    table = Table(
        f"suggestions: {len(typed)} prefixes of queries (2-8 characters), {len(typos)} with a typo",
        ["run", "p50 ms", "p95 ms", "req/s", "p50/base"],
    )
    for name, prefixes in (("as typed", typed), ("one typo", typos)):

        def local(i: int, prefixes: list[str] = prefixes) -> dict[str, Any]:
            catalog.suggestions.suggest(prefixes[i % len(prefixes)])
            return {}

        def remote(i: int, prefixes: list[str] = prefixes) -> dict[str, Any]:
            http.request("GET", "/suggest?" + urlencode({"prefix": prefixes[i % len(prefixes)]}))
            return {}

        baseline = timed_run(local, len(prefixes), 1)
        for run, r in (("in-process, c=1 (base)", baseline),
                       ("HTTP, c=1", timed_run(remote, len(prefixes), 1))):  # fmt: skip
            table.rows.append(
                [
                    f"{name}: {run}",
                    r["p50"],
                    r["p95"],
                    round(r["rps"], 1),
                    r["p50"] / baseline["p50"],
                ]
            )
    return table


def _recall(catalog: Catalog, client: EmbeddingClient, queries: list[str]) -> str:
    """HNSW recall@10 against exact search."""
    serving = catalog.versions.serving()
    vectors = client.embed_texts(queries, serving.model_version).vectors
    recalls = []
    for vector in vectors:
        approx = {n.product.id for n in catalog.vectors.nearest(serving, vector, 10).neighbors}
        exact = {
            n.product.id for n in catalog.vectors.nearest(serving, vector, 10, exact=True).neighbors
        }
        recalls.append(len(approx & exact) / 10)
    return (
        f"HNSW recall@10 vs exact search on {len(recalls)} text queries:"
        f" {statistics.mean(recalls):.4f} (min {min(recalls):.2f})"
    )


def _table(
    title: str, rows: list[tuple[str, dict[str, float]]], baseline: dict[str, float]
) -> Table:
    header = ["run", "p50 ms", "p95 ms", "req/s", "p50/base", "model", "db", "urls", "rest"]
    return Table(title, header, [
        [name, r["p50"], r["p95"], round(r["rps"], 1), r["p50"] / baseline["p50"],
         r.get("model", 0.0), r.get("database", 0.0), r.get("urls", 0.0), r.get("rest", 0.0)]
        for name, r in rows
    ])  # fmt: skip


RUNS = ["text", "image", "suggest", "recall"]


def suggest_prefixes(queries: list[str], n: int) -> tuple[list[str], list[str]]:
    """Prefixes (2 to 8 characters of a query, cut at random) and the same with one typo
    (a character dropped, from prefixes of 4 characters or more)."""
    rng = random.Random(1)
    typed = [q[: rng.randint(2, 8)] for q in queries[:n]]
    typos = []
    for prefix in typed:
        if len(prefix) >= 4:
            drop = rng.randrange(1, len(prefix))
            typos.append(prefix[:drop] + prefix[drop + 1 :])
    return typed, typos


def main() -> None:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--runs", nargs="+", default=RUNS, choices=RUNS, help="what to measure")
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.search")
    settings = get_settings()
    items = list(iter_dataset(settings.dataset_source, limit=2000))
    rng = random.Random(0)
    rng.shuffle(items)
    queries = [
        f.product_display_name if i % 2 else attribute_caption(f)
        for i, f in enumerate(item.fields for item in items)
    ]
    images = [item.image for item in items[:200]]
    uploads = [  # multipart bodies, encoded before the clock starts
        urllib3.encode_multipart_formdata(
            {"image": ("q.jpg", image, "image/jpeg"), "k": str(args.k)}
        )
        for image in images
    ]
    http = HttpClient(settings.search.api_url)
    count = http.request("GET", "/health")["catalog"]["products"]

    def text(i: int) -> dict[str, Any]:
        query = urlencode({"q": queries[i % len(queries)], "k": args.k})
        return http.request("GET", f"/search/text?{query}")

    def image(i: int) -> dict[str, Any]:
        body, content_type = uploads[i % len(uploads)]
        return http.request("POST", "/search/image", body, {"Content-Type": content_type})

    with create_pool(settings) as pool, EmbeddingClient(settings.model_server.address) as client:
        catalog = Catalog.of(pool)
        service = SearchService(settings, catalog, ObjectStore(settings), client)
        info = client.info()
        served = settings.replace(
            registry={"model_name": info.registry_name},
            model_server={"quantized": info.quantized},
        )
        text_tower_ms = text_tower_timer(served, queries[0])
        before = text_tower_ms()
        variant = "int8" if info.quantized else "fp32"
        report.add(f"catalog: {count} products; model {info.registry_name}"
                   f" v{info.registry_version} (dim {info.dimension}, {variant},"
                   f" {info.execution_providers[0]})")  # fmt: skip

        def in_process_text(i: int) -> dict[str, Any]:
            r = service.text(queries[i % len(queries)], args.k)
            return {"timingsMs": r.timings_ms}

        def in_process_image(i: int) -> dict[str, Any]:
            r = service.image(images[i % len(images)], args.k)
            return {"timingsMs": r.timings_ms}

        for name, http_call, local in (("text", text, in_process_text),
                                       ("image", image, in_process_image)):  # fmt: skip
            if name not in args.runs:
                continue
            baseline = timed_run(local, args.requests, 1)
            rows = [("in-process, c=1 (base)", baseline)]
            rows += [
                (f"HTTP, c={c}", timed_run(http_call, args.requests, c)) for c in args.concurrency
            ]
            title = f"{name} search, k={args.k}, {args.requests} requests per run"
            report.add(_table(title, rows, baseline))

        if "suggest" in args.runs:
            report.add(_suggest_table(http, catalog, *suggest_prefixes(queries, args.requests)))
        if "recall" in args.runs:
            report.add(_recall(catalog, client, queries[:200]))
        after = text_tower_ms()
    report.add(
        f"text tower alone (1 thread, machine speed): {before:.2f} ms before, {after:.2f} after"
    )
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
