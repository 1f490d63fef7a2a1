"""Where a text search spends its CPU under load: py-spy samples the running API and model
server (``make up``) while text searches run at each concurrency, and the table gives each
function's share of the samples (inclusive: the function and what it calls), per process:

    .venv/bin/py-spy --version  # py-spy is not a dependency: uv pip install py-spy
    .venv/bin/python -m bench.profile --concurrency 1 32 --seconds 20

Alongside, PostgreSQL's own count of the transactions and rows the load caused
(``pg_stat_database``), per search.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import psycopg

from bench.report import Report, Table, add_markdown_option
from bench.search import HttpClient
from fashion_search.dataset import iter_dataset
from fashion_search.settings import get_settings
from stack.apps import app_process

#: The processes sampled (``make up``'s programs).
PROCESSES = ("api", "model-server")
#: Rows per process in the table.
TOP = 18


def _pid(name: str) -> int:
    pid = app_process(get_settings(), name).pid()
    if pid is None:
        sys.exit(f"{name} is not running: make up first")
    return pid


def _shares(raw: str) -> tuple[Counter[str], int]:
    """Inclusive samples per function (``name (file)``) of py-spy's raw (collapsed) stacks,
    and the samples in all."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        frames = {frame.rsplit(":", 1)[0] + ")" for frame in stack.split(";")[1:]}
        for frame in frames:
            inclusive[frame] += int(count)
    return inclusive, total


def _database_counters() -> tuple[int, int]:
    with psycopg.connect(get_settings().database.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, tup_returned + tup_fetched"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _load(concurrency: int, seconds: float, queries: list[str]) -> int:
    """Text searches on ``concurrency`` threads for ``seconds``: how many were answered."""
    http = HttpClient(get_settings().search.api_url)
    stop = time.monotonic() + seconds
    done = [0] * concurrency

    def run(worker: int) -> None:
        i = worker
        while time.monotonic() < stop:
            http.request("GET", f"/search/text?{urlencode({'q': queries[i % len(queries)]})}")
            done[worker] += 1
            i += concurrency

    threads = [threading.Thread(target=run, args=(w,)) for w in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done)


def main() -> None:
    """Sample the API and the model server under load at each concurrency; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=20.0)
    add_markdown_option(parser)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    settings = get_settings()
    items = list(iter_dataset(settings.dataset_source, limit=1000))
    random.Random(0).shuffle(items)
    queries = [item.fields.product_display_name for item in items]
    report = Report("bench.profile")
    for concurrency in args.concurrency:
        _load(concurrency, 3.0, queries)  # warm-up
        outputs = {name: Path(tempfile.mkstemp(suffix=".txt")[1]) for name in PROCESSES}
        samplers = [
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(_pid(name)),
                    "--subprocesses",
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--duration",
                    str(int(args.seconds)),
                    "--output",
                    str(out),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, out in outputs.items()
        ]
        time.sleep(1.0)  # py-spy attaches
        before = _database_counters()
        started = time.monotonic()
        searches = _load(concurrency, args.seconds - 2, queries)
        took = time.monotonic() - started
        after = _database_counters()
        for sampler in samplers:
            sampler.wait()
        report.add(
            f"concurrency {concurrency}: {searches} text searches in {took:.1f} s"
            f" ({searches / took:.1f} req/s); PostgreSQL per search:"
            f" {(after[0] - before[0]) / searches:.2f} transactions,"
            f" {(after[1] - before[1]) / searches:.0f} rows read"
        )
        for name, out in outputs.items():
            inclusive, total = _shares(out.read_text())
            out.unlink()
            table = Table(
                f"{name} at concurrency {concurrency}: share of {total} CPU samples (inclusive)",
                ["function (file)", "share"],
            )
            table.rows += [[f, f"{n / max(total, 1):.1%}"] for f, n in inclusive.most_common(TOP)]
            report.add(table)
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
