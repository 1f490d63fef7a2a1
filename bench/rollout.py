"""A zero-downtime rollout timed: a catalog of ``--limit`` products (default: the whole
dataset) served by version A, then version B rolled out beside it. Reports the build time,
the time from ``ready`` to a search answered by B (the switch), text-search p50/p95 at
concurrency 1 and 8 during the build against the same with no build running (same run,
ratio), and the disk each version's embeddings take.

Everything runs in a scratch database and under a fresh model name on the running stack
(``make up``'s services); both versions are ``--architecture`` with untrained weights (the
timing does not depend on the weights). The model server runs as its own process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.report import Report, Table, add_markdown_option
from bench.search import timed_run
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.model.factory import ModelSpec
from fashion_search.model.pipeline import train_and_register
from fashion_search.model.train import TrainConfig
from fashion_search.search.service import SearchService
from fashion_search.settings import REPO_ROOT, Settings, get_settings
from fashion_search.storage import ObjectStore
from fashion_search.workflows import rollout
from fashion_search.workflows.catalog import load_products
from model_server.export import export_version
from stack.postgres import create_database
from stack.process import ManagedProcess

QUERIES = ["navy blue casual shirt for men", "red dress", "black leather watch", "sports shoes",
           "white tshirt for women", "blue jeans", "handbag", "sunglasses"]  # fmt: skip


def _search_load(service: SearchService, n: int, concurrency: int) -> dict[str, float]:
    def call(i: int) -> dict[str, Any]:
        result = service.text(QUERIES[i % len(QUERIES)], k=10)
        return {"timingsMs": {}, "version": result.model_version}

    return timed_run(call, n, concurrency)


def _start_model_server(settings: Settings, run_dir: Path) -> ManagedProcess:
    process = ManagedProcess("bench-model-server", run_dir, run_dir)
    process.start([sys.executable, "-m", "model_server"], settings.to_env(), cwd=REPO_ROOT)

    def ready() -> bool:
        with EmbeddingClient(settings.model_server.address, timeout_s=2) as client:
            return client.healthy()

    if not process.wait_ready(ready, 600):
        raise RuntimeError(f"model server did not start:\n{process.log_tail()}")
    return process


def main() -> None:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, help="catalog products (default: all)")
    parser.add_argument("--architecture", default="fashion-compact")
    parser.add_argument("--requests", type=int, default=200, help="searches per measurement")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.rollout")
    base = get_settings()
    run = uuid.uuid4().hex[:6]
    settings = base.replace(
        database={"name": f"bench_rollout_{run}", "url": make_conninfo(
            base.database.url, dbname=f"bench_rollout_{run}")},
        registry={"model_name": f"bench-rollout-{run}", "serve_timeout_s": 600},
        model_server={"port": base.model_server.port + 7, "reload_interval_s": 1.0,
                      "address": f"127.0.0.1:{base.model_server.port + 7}"},
    )  # fmt: skip
    admin = make_conninfo(base.database.url, dbname="postgres")
    create_database(admin, settings.database.name)
    for seed in (0, 1):  # A becomes the champion (the first version), B is registered
        train_and_register(settings, ModelSpec(args.architecture), TrainConfig(epochs=0, seed=seed),
                           settings.dataset_source, export_version, limit=256,
                           progress=False)  # fmt: skip
    server = _start_model_server(settings, Path(tempfile.mkdtemp(prefix="bench-rollout-")))
    try:
        migrate(settings.database.url, settings.database.embedding_dim)
        loaded = load_products(settings, settings.dataset_source, args.limit)
        report.add(
            f"catalog: {loaded.loaded} products embedded by version {loaded.model_version}"
            f" ({args.architecture}, untrained) in {loaded.seconds} s"
        )
        with (
            create_pool(settings) as pool,
            EmbeddingClient(settings.model_server.address) as client,
        ):
            catalog = Catalog.of(pool)
            service = SearchService(settings, catalog, ObjectStore(settings), client)
            idle = {c: _search_load(service, args.requests, c) for c in (1, 8)}
            rollout.prepare(settings, "2")
            built: list[rollout.Built] = []
            builder = threading.Thread(target=lambda: built.append(rollout.build(settings, "2")))
            builder.start()
            time.sleep(5)  # into the build
            during = {c: _search_load(service, args.requests, c) for c in (1, 8)}
            still_building = builder.is_alive()
            builder.join()
            started = time.perf_counter()
            switched = rollout.switch(settings, "2")
            while service.text(QUERIES[0], k=10).model_version != "2":
                pass
            to_serving_ms = (time.perf_counter() - started) * 1000
            sizes = {v: catalog.versions.storage_bytes(v) / 1e6 for v in ("1", "2")}
    finally:
        server.stop()
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(settings.database.name)))  # fmt: skip

    report.add(Table("Rollout", ["step", "value"], [
        ["products embedded by the build", built[0].embedded],
        ["build time (s)", built[0].seconds],
        ["build images/s", round(built[0].embedded / built[0].seconds, 1)],
        ["switch transaction (ms)", switched.switch_ms],
        ["ready -> first search answered by the new version (ms)", round(to_serving_ms, 1)],
        *[[f"disk, version {v} (MB)", round(mb, 1)] for v, mb in sizes.items()],
    ]))  # fmt: skip
    rows = []
    for c in (1, 8):
        for stat in ("p50", "p95"):
            rows.append([f"c={c} {stat} (ms)", round(idle[c][stat], 2), round(during[c][stat], 2),
                         round(during[c][stat] / idle[c][stat], 2)])  # fmt: skip
        rows.append([f"c={c} req/s", round(idle[c]["rps"], 1), round(during[c]["rps"], 1),
                     round(during[c]["rps"] / idle[c]["rps"], 2)])  # fmt: skip
    report.add(Table("Text search (hybrid, k=10) with no build vs during the build",
                     ["measure", "no build", "during build", "ratio"], rows))  # fmt: skip
    if not still_building:
        report.add("note: the build ended before the during-build measurement did")
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
