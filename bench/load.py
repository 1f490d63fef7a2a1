"""Load test over HTTP against the running stack (``make up``):

    .venv/bin/python -m bench.load --concurrency 64 --duration 60

Text search, image search and GraphQL (``product`` and ``products``) as one mix, from
``--concurrency`` threads for ``--duration`` seconds, after the same mix from one thread for
``--baseline-duration`` seconds (the baseline of the ratios). Per kind and in total: requests,
req/s, latency percentiles of the 200s, and outcomes by status (200, 429, 503, other 5xx, other,
timeouts, connection errors) with the slowest 503: overload must be answered quickly. Exits 1
when any request got a 5xx other than 503, timed out or lost its connection.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np
import urllib3

from bench.report import Report, Table, add_markdown_option
from bench.search import HttpClient
from fashion_search.dataset import iter_dataset
from fashion_search.model.data import attribute_caption
from fashion_search.settings import get_settings

KINDS = ("text", "image", "graphql")
OUTCOMES = ("200", "429", "503", "5xx", "other", "timeout", "conn error")
FAILURES = ("5xx", "timeout", "conn error")

PRODUCT = "query($id: ID!) { product(id: $id) { id productDisplayName articleType imageUrl } }"
PRODUCTS = (
    "query($f: ProductFilter) { products(first: 10, filter: $f) {"
    " edges { node { id productDisplayName imageUrl } } pageInfo { endCursor } } }"
)


@dataclass(frozen=True)
class Call:
    """One request of the mix, encoded before the clock starts."""

    kind: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Outcome:
    kind: str
    outcome: str
    ms: float
    note: str = ""


def _outcome(status: int, body: bytes, kind: str) -> tuple[str, str]:
    if status == 200 and kind == "graphql" and b'"errors"' in body:
        return "other", f"HTTP 200 with GraphQL errors {body[:200]!r}"
    if status in (200, 429, 503):
        return str(status), ""
    note = f"HTTP {status} {body[:200]!r}"
    return ("5xx" if status >= 500 else "other"), note


def mix(weights: dict[str, int], seed: int = 0) -> list[Call]:
    """The calls of the mix, in a shuffled order, from the dataset's first 2000 products:
    captions and titles as text queries, 200 images as uploads, ids and filters for GraphQL."""
    items = list(iter_dataset(get_settings().dataset_source, limit=2000))
    rng = random.Random(seed)
    rng.shuffle(items)
    fields = [item.fields for item in items]
    calls: dict[str, list[Call]] = {
        "text": [
            Call("text", "GET", "/search/text?" + urlencode({"q": query, "k": 10}))
            for query in itertools.chain.from_iterable(
                (f.product_display_name, attribute_caption(f)) for f in fields[:500]
            )
        ],
        "image": [
            Call("image", "POST", "/search/image", body, content_type)
            for body, content_type in (
                urllib3.encode_multipart_formdata(
                    {"image": ("q.jpg", item.image, "image/jpeg"), "k": "10"}
                )
                for item in items[:200]
            )
        ],
        "graphql": [
            Call("graphql", "POST", "/graphql", json.dumps(query).encode(), "application/json")
            for query in itertools.chain.from_iterable(
                (
                    {"query": PRODUCT, "variables": {"id": str(f.id)}},
                    {
                        "query": PRODUCTS,
                        "variables": {"f": {"masterCategory": [f.master_category]}},
                    },
                )
                for f in fields[:500]
            )
        ],
    }
    deck = [call for kind, weight in weights.items()
            for call in itertools.islice(itertools.cycle(calls[kind]), weight * 200)]  # fmt: skip
    rng.shuffle(deck)
    return deck


def send(client: HttpClient, call: Call) -> Outcome:
    """One call, timed, and how it ended."""
    headers = {"Content-Type": call.content_type} if call.content_type else {}
    started = time.perf_counter()
    try:
        status, body = client.exchange(call.method, call.path, call.body, headers)
        outcome, note = _outcome(status, body, call.kind)
    except TimeoutError as error:
        outcome, note = "timeout", f"{call.method} {call.path[:80]}: {error!r}"
    except (OSError, http.client.HTTPException) as error:  # refused, reset, server gone
        outcome, note = "conn error", f"{call.method} {call.path[:80]}: {error!r}"
    return Outcome(call.kind, outcome, (time.perf_counter() - started) * 1000, note)


def run(
    client: HttpClient, deck: list[Call], concurrency: int, duration_s: float
) -> tuple[list[Outcome], float]:
    """The deck's calls, round, from ``concurrency`` threads until ``duration_s`` passed (calls
    in flight then finish); every call's outcome and the seconds it all took."""
    outcomes: list[Outcome] = []
    counter = itertools.count()
    deadline = time.perf_counter() + duration_s

    def worker() -> None:
        while time.perf_counter() < deadline:
            outcomes.append(send(client, deck[next(counter) % len(deck)]))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, time.perf_counter() - started


@dataclass(frozen=True)
class Summary:
    """One kind (or all) of one run."""

    requests: int
    rps: float
    ok_rps: float
    p50: float
    p95: float
    p99: float
    counts: Counter[str]
    max_503_ms: float

    @classmethod
    def of(cls, outcomes: list[Outcome], took_s: float) -> Summary:
        """From a run's outcomes (of one kind, or all)."""
        served = [o.ms for o in outcomes if o.outcome == "200"]
        refused = [o.ms for o in outcomes if o.outcome == "503"]

        def pct(q: float) -> float:
            return float(np.percentile(served, q)) if served else float("nan")

        return cls(
            requests=len(outcomes), rps=len(outcomes) / took_s, ok_rps=len(served) / took_s,
            p50=pct(50), p95=pct(95), p99=pct(99),
            counts=Counter(o.outcome for o in outcomes),
            max_503_ms=max(refused, default=float("nan")),
        )  # fmt: skip


def summaries(outcomes: list[Outcome], took_s: float) -> dict[str, Summary]:
    """Per kind and ``all``."""
    per_kind = {kind: [o for o in outcomes if o.kind == kind] for kind in KINDS}
    return {**{k: Summary.of(v, took_s) for k, v in per_kind.items()},
            "all": Summary.of(outcomes, took_s)}  # fmt: skip


def _ratio(value: float, base: float) -> float:
    return value / base if base and not math.isnan(base) else float("nan")


def tables(
    runs: list[tuple[str, dict[str, Summary]]], baseline: dict[str, Summary], title: str
) -> list[Table]:
    """Throughput and latency against the baseline, and outcomes, per run and kind."""
    speed = Table(
        f"{title}: throughput and latency of the 200s",
        ["run", "kind", "requests", "req/s", "200/s", "p50 ms", "p95 ms", "p99 ms",
         "200/s vs c=1", "p50 vs c=1"],
    )  # fmt: skip
    outcomes = Table(f"{title}: outcomes", ["run", "kind", *OUTCOMES, "503 max ms"])
    for name, by_kind in runs:
        for kind, s in by_kind.items():
            base = baseline[kind]
            speed.rows.append([name, kind, s.requests, round(s.rps, 1), round(s.ok_rps, 1),
                               s.p50, s.p95, s.p99, _ratio(s.ok_rps, base.ok_rps),
                               _ratio(s.p50, base.p50)])  # fmt: skip
            outcomes.rows.append([name, kind, *(s.counts[o] for o in OUTCOMES), s.max_503_ms])
    return [speed, outcomes]


def _weights(text: str) -> dict[str, int]:
    weights = {kind: int(weight) for kind, weight in (p.split("=") for p in text.split(","))}
    if not weights or set(weights) - set(KINDS) or min(weights.values()) < 0:
        raise argparse.ArgumentTypeError(f"--mix takes kind=weight for kinds {KINDS}: {text!r}")
    return weights


def main() -> None:
    """Run the baseline and the load, print the tables; exit 1 on a failed request."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=64, help="threads of the load run")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the load run")
    parser.add_argument(
        "--baseline-duration", type=float, default=10.0, help="seconds of the c=1 baseline"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds of silence that make a timeout"
    )
    parser.add_argument(
        "--mix", type=_weights, default="text=2,image=1,graphql=1", help="kind=weight, ..."
    )
    add_markdown_option(parser)
    args = parser.parse_args()
    settings = get_settings()
    client = HttpClient(settings.search.api_url, timeout_s=args.timeout)
    try:
        health = client.request("GET", "/health")
    except (OSError, RuntimeError) as error:
        sys.exit(f"the API at {settings.search.api_url} is not ready (make up?): {error}")
    deck = mix(args.mix)
    report = Report("bench.load")
    report.add(
        f"API {settings.search.api_url}: catalog of {health['catalog']['products']} products;"
        f" mix {args.mix}; per-request timeout {args.timeout:g} s"
    )
    for kind in args.mix:  # the API builds its services on first use: not in the baseline
        send(client, next(call for call in deck if call.kind == kind))
    base_outcomes, base_took = run(client, deck, 1, args.baseline_duration)
    load_outcomes, load_took = run(client, deck, args.concurrency, args.duration)
    baseline = summaries(base_outcomes, base_took)
    runs = [
        (f"c=1, {args.baseline_duration:g} s (base)", baseline),
        (f"c={args.concurrency}, {args.duration:g} s", summaries(load_outcomes, load_took)),
    ]
    for table in tables(runs, baseline, f"search mix at concurrency {args.concurrency}"):
        report.add(table)
    failed = [o for o in base_outcomes + load_outcomes if o.outcome in FAILURES]
    if failed:
        kinds = Counter(f"{o.kind} {o.outcome}" for o in failed)
        report.add(f"FAILED: {len(failed)} requests ({dict(kinds)}); first ones:")
        for o in failed[:10]:
            report.add(f"  {o.kind} {o.outcome} after {o.ms:.0f} ms: {o.note}")
    report.write_markdown(args.markdown)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
