"""Same-run A/B of serving variants on the headline figures, interleaved round by round.

Each variant is a name, the code it runs (this checkout, or another one such as a git worktree of
an older commit: ``@DIR`` for the model server and the API, ``api@DIR`` for the API only, when
the older model server cannot load today's model) and ``FS_*`` variables; for each round and
variant the model server and the API are started afresh from that code on the running stack's
catalog, then measured:

    .venv/bin/python -m bench.variants --rounds 3 \\
        --variant 'defaults' --variant 'one thread:FS_MODEL_THREADS=1' \\
        --variant 'before:api@../before-worktree'

Figures: text search p50/p95 at concurrency 1, req/s at 8 and 32 and p99 at 32 (HTTP, every
setting at its default), image search p50 at concurrency 1 and req/s at 8, and the model
server's images/s at batch 32 (gRPC); each variant's median over the rounds, with its ratio to
the first variant's. Stop ``make up``'s model server and API first (``python -m stack.apps
down``): the variants use their ports.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

from bench.baseline import raw_image_rate
from bench.report import Report, Table, add_markdown_option
from bench.search import HttpClient, timed_run
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.settings import REPO_ROOT, get_settings
from stack.process import ManagedProcess
from stack.service import http_ok

FIGURES = (
    "text p50 c=1", "text p95 c=1", "text req/s c=8", "text req/s c=32", "text p99 c=32",
    "image p50 c=1", "image req/s c=8", "images/s bs32",
)  # fmt: skip
HIGHER_IS_BETTER = {"text req/s c=8", "text req/s c=32", "image req/s c=8", "images/s bs32"}


@dataclass
class Variant:
    """What to serve: the code's directory, and the environment on top of this one's."""

    name: str
    code: Path = REPO_ROOT
    api_code: Path = REPO_ROOT
    env: dict[str, str] = field(default_factory=dict)
    runs: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """``name[:@DIR|:api@DIR][:VAR=VALUE...]``."""
        name, *parts = spec.split(":")
        variant = cls(name)
        for part in parts:
            if part.startswith("@"):
                variant.code = variant.api_code = Path(part[1:]).resolve()
            elif part.startswith("api@"):
                variant.api_code = Path(part[4:]).resolve()
            else:
                key, value = part.split("=", 1)
                variant.env[key] = value
        return variant


def _start(variant: Variant, run_dir: Path) -> list[ManagedProcess]:
    """The variant's model server, then its API, each once it answers."""
    settings = get_settings()
    started = []
    for name, argv, ready, code in (
        ("model-server", ["-m", "model_server"], _model_ready, variant.code),
        ("api", ["-m", "functions"], lambda: http_ok(f"{settings.search.api_url}/health"),
         variant.api_code),
    ):  # fmt: skip
        python = code / ".venv" / "bin" / "python"
        env = {**os.environ, **variant.env, "PYTHONPATH": str(code)}
        process = ManagedProcess(f"variant-{name}", run_dir, run_dir)
        process.start([str(python if python.exists() else sys.executable), *argv], env,
                      cwd=code)  # fmt: skip
        started.append(process)
        if not process.wait_ready(ready, 600):
            for p in started:
                p.stop()
            raise RuntimeError(f"{variant.name}: {name} did not start:\n{process.log_tail()}")
    return started


def _model_ready() -> bool:
    with EmbeddingClient(get_settings().model_server.address, timeout_s=2) as client:
        return client.healthy()


def _measure(requests: int, queries: list[str], images: list[bytes]) -> dict[str, float]:
    settings = get_settings()
    http = HttpClient(settings.search.api_url)
    uploads = [
        urllib3.encode_multipart_formdata({"image": ("q.jpg", image, "image/jpeg")})
        for image in images
    ]

    def text(i: int) -> dict[str, Any]:
        return http.request("GET", f"/search/text?{urlencode({'q': queries[i % len(queries)]})}")

    def image(i: int) -> dict[str, Any]:
        body, content_type = uploads[i % len(uploads)]
        return http.request("POST", "/search/image", body, {"Content-Type": content_type})

    text_c1 = timed_run(text, requests, 1)
    text_c32 = timed_run(text, requests, 32)
    with EmbeddingClient(settings.model_server.address, timeout_s=120) as client:
        rate = raw_image_rate(client, images[:160], 32)
    return {
        "text p50 c=1": text_c1["p50"],
        "text p95 c=1": text_c1["p95"],
        "text req/s c=8": timed_run(text, requests, 8)["rps"],
        "text req/s c=32": text_c32["rps"],
        "text p99 c=32": text_c32["p99"],
        "image p50 c=1": timed_run(image, requests // 2, 1)["p50"],
        "image req/s c=8": timed_run(image, requests // 2, 8)["rps"],
        "images/s bs32": rate,
    }


def main() -> None:
    """Run every variant ``--rounds`` times, interleaved, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", action="append", required=True, type=Variant.parse)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=150, help="requests per measurement")
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.variants")
    settings = get_settings()
    items = list(iter_dataset(settings.dataset_source, limit=1000))
    random.Random(0).shuffle(items)
    queries = [item.fields.product_display_name for item in items]
    images = [item.image for item in items[:200]]
    run_dir = settings.stack.state_dir / "bench-variants"
    run_dir.mkdir(parents=True, exist_ok=True)
    for round_ in range(args.rounds):
        for variant in args.variant:
            processes = _start(variant, run_dir)
            try:
                variant.runs.append(_measure(args.requests, queries, images))
            finally:
                for process in reversed(processes):
                    process.stop()
            cells = ", ".join(f"{k} {v:.2f}" for k, v in variant.runs[-1].items())
            print(f"round {round_ + 1}, {variant.name}: {cells}", flush=True)
    base = {f: statistics.median(r[f] for r in args.variant[0].runs) for f in FIGURES}
    table = Table(
        f"median of {args.rounds} interleaved rounds, {args.requests} requests each;"
        " ratio: to the first variant (> 1 is better)",
        ["variant", *(h for f in FIGURES for h in (f, "ratio"))],
    )
    for variant in args.variant:
        row: list[str | float | int] = [variant.name]
        for f in FIGURES:
            value = statistics.median(r[f] for r in variant.runs)
            row += [value, value / base[f] if f in HIGHER_IS_BETTER else base[f] / value]
        table.rows.append(row)
    report.add(
        "variants: " + "; ".join(
            f"{v.name} = {v.code.name if v.code != REPO_ROOT else 'this checkout'}"
            + (f" (API: {v.api_code.name})" if v.api_code != v.code else "")
            + "".join(f" {k}={x}" for k, x in v.env.items())
            for v in args.variant
        )
    )  # fmt: skip
    report.add(table)
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
