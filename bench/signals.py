"""What the ranking's business signals change and cost, against the running catalog (``make
up``: the whole catalog embedded by the served model), through the search service in process:

    .venv/bin/python -m bench.signals --markdown docs/benchmarks.md

- relevance: P@10 per group of judged queries (``bench.judged``'s), every setting at its
  default and the version's cutoff, with signals off, and with signals that have nothing to do
  with relevance at the default weights and multiples of them: for the run, every product gets
  a random popularity (clicks and add-to-carts of random ages, as feedback rows) and a random
  boost, all removed afterwards. The defaults may cost at most 0.01 of P@10 on any group.
- cost: text search p50 on the judged queries, signals off against the defaults (the baseline
  and the variant interleaved, ``--rounds`` times).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from bench.judged import COLUMNS
from bench.relevance import all_products
from bench.report import Report, Table, add_markdown_option
from bench.search import percentile
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.learning.judged_queries import answerable, evaluate_judged, judged_queries
from fashion_search.search.service import SearchService
from fashion_search.settings import Settings, SignalSettings, get_settings
from fashion_search.storage import ObjectStore

WEIGHTS = ("popularity_weight", "newness_weight", "boost_weight")


@contextmanager
def random_signals(database_url: str, seed: float) -> Iterator[str]:
    """Every product with a random popularity (0 to ~50 signals up to 30 days old, as feedback
    rows, already published) and a random boost, by a run id; removed on exit."""
    run = f"bench-signals-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT setseed(%s)", (seed,))
        conn.execute(
            "INSERT INTO feedback (signal, query, product_id, position, session_id, created_at,"
            " published_at) SELECT CASE WHEN random() < 0.8 THEN 'click' ELSE 'add_to_cart' END,"
            " 'bench', p.id, 1, %s, now() - random() * interval '30 days', now()"
            " FROM products p, generate_series(1, floor(exp(random() * 4))::int - 1)",
            (run,),
        )
        conn.execute(
            "INSERT INTO product_boosts (product_id, boost, set_by)"
            " SELECT id, random() * 2 - 1, %s FROM products",
            (run,),
        )
        conn.execute("VACUUM ANALYZE feedback, product_boosts")  # as autovacuum leaves them
        try:
            yield run
        finally:
            conn.execute("DELETE FROM feedback WHERE session_id = %s", (run,))
            conn.execute("DELETE FROM product_boosts WHERE set_by = %s", (run,))


def searcher(service: SearchService, signals: dict[str, float]) -> SearchService:
    """The service with other signal weights."""
    return service.reconfigured(service.settings.replace(signals=signals))


def weights(multiple: float) -> dict[str, float]:
    """The default weights times ``multiple`` (0: off)."""
    defaults = SignalSettings()
    return {name: getattr(defaults, name) * multiple for name in WEIGHTS}


def main() -> None:
    """Run both parts and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--multiples", type=float, nargs="+", default=[1, 3, 10])
    parser.add_argument("--rounds", type=int, default=3)
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.signals")
    settings: Settings = get_settings()
    with create_pool(settings) as pool, EmbeddingClient(settings.model_server.address) as client:
        catalog = Catalog.of(pool)
        service = SearchService(settings, catalog, ObjectStore(settings), client)
        products = all_products(catalog)
        queries = answerable(judged_queries(), products, 1)
        totals = {q.text: n for q, n in queries}
        report.add(
            f"catalog: {len(products)} products; {len(queries)} judged queries; default"
            f" weights {weights(1)}"
        )

        def p10(search: SearchService) -> dict[str, dict[str, float]]:
            def rank(text: str) -> list[Any]:
                return [h.product for h in search.text(text, 10).hits]

            return evaluate_judged(rank, [q for q, _ in queries], lambda q: totals[q.text])

        off = searcher(service, weights(0))
        with random_signals(settings.database.url, 0.42):
            rows = [("off", p10(off))]
            rows += [(f"{m:g}x the defaults", p10(searcher(service, weights(m))))
                     for m in args.multiples]  # fmt: skip
            table = Table("P@10 per group, random signals", ["signals", *COLUMNS, "worst drop"])
            for name, metrics in rows:
                drop = max(rows[0][1][c]["p10"] - metrics[c]["p10"] for c in COLUMNS)
                table.rows.append([name, *(metrics[c]["p10"] for c in COLUMNS), f"{drop:.3f}"])
            report.add(table)

            on = searcher(service, weights(1))
            texts = [q.text for q, _ in queries]
            timings: dict[str, list[float]] = {"off": [], "defaults": []}
            for _ in range(args.rounds):
                for name, search in (("off", off), ("defaults", on)):
                    for text in texts:
                        started = time.perf_counter()
                        search.text(text, 10)
                        timings[name].append((time.perf_counter() - started) * 1000)
            base = percentile(timings["off"], 50)
            cost = Table("text search, in process", ["signals", "searches", "p50 ms", "p95 ms",
                                                     "ratio"])  # fmt: skip
            for name, values in timings.items():
                p50 = percentile(values, 50)
                cost.rows.append([name, len(values), p50, percentile(values, 95), p50 / base])
            report.add(cost)
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
