"""Catalog benchmark on the running local stack (``python -m stack up`` first).

Loads N shared products with clustered 512-d vectors into a scratch database and prints:
- bulk upsert throughput (COPY + one upsert) against row-by-row INSERTs (baseline, same run);
- nearest-neighbour latency p50/p95 with the HNSW index against exact search (baseline),
  unfiltered and under a ~1% filter, with HNSW recall@10 against the exact answers.

    .venv/bin/python -m bench.catalog --products 20000 --queries 200
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections import Counter
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.report import Report, Table, add_markdown_option
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.models import Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.dataset import iter_dataset
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import product_image_key
from stack.postgres import create_database


def _products(settings: Settings, n: int, dim: int) -> list[Product]:
    rng = np.random.default_rng(0)
    centers: dict[str | None, np.ndarray[Any, Any]] = {}
    products = []
    for item in iter_dataset(settings.dataset_source, limit=n):
        center = centers.setdefault(item.fields.article_type, rng.normal(size=dim))
        vector = center + 0.8 * rng.normal(size=dim)
        products.append(
            Product(
                **item.fields.model_dump(),
                image_key=product_image_key(item.fields.id),
                model_version="bench",
                embedding=(vector / np.linalg.norm(vector)).astype(np.float32),
            )
        )
    return products


def _row_by_row(conninfo: str, products: list[Product]) -> None:
    from pgvector.psycopg import register_vector

    with psycopg.connect(conninfo) as conn:
        register_vector(conn)
        conn.execute("TRUNCATE products CASCADE")
        with conn.cursor() as cur:
            for p in products:
                cur.execute(
                    "INSERT INTO products (id, gender, master_category, sub_category,"
                    " article_type, base_colour, season, year, usage, product_display_name,"
                    " image_key, dataset) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (
                        p.id, p.gender, p.master_category, p.sub_category, p.article_type,
                        p.base_colour, p.season, p.year, p.usage, p.product_display_name,
                        p.image_key, p.dataset,
                    ),
                )  # fmt: skip
                cur.execute(
                    "INSERT INTO product_embeddings (model_version, product_id, embedding)"
                    " VALUES (%s, %s, %s)",
                    (p.model_version, p.id, p.embedding),
                )
        conn.commit()


def _latencies(fn: Any, queries: list[Any]) -> tuple[float, float, list[list[int]]]:
    fn(queries[0])  # warm-up
    times, answers = [], []
    for query in queries:
        started = time.perf_counter()
        answers.append(fn(query))
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95)), answers


def main() -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=100)
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.catalog")

    settings = get_settings()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(settings.database.url, dbname="postgres")
    create_database(admin, name)
    conninfo = make_conninfo(settings.database.url, dbname=name)
    try:
        migrate(conninfo, settings.database.embedding_dim)
        products = _products(settings, args.products, settings.database.embedding_dim)
        n = len(products)
        with create_pool(settings, conninfo) as pool:
            catalog = Catalog.of(pool)
            version = catalog.versions.bootstrap("bench", settings.database.embedding_dim)
            started = time.perf_counter()
            _row_by_row(conninfo, products)
            row_s = time.perf_counter() - started
            with pool.connection() as conn:
                conn.execute("TRUNCATE products CASCADE")
            started = time.perf_counter()
            catalog.products.upsert_many(products)
            copy_s = time.perf_counter() - started

            rng = np.random.default_rng(1)
            picks = rng.choice(n, size=args.queries, replace=False)
            queries = [products[i].embedding for i in picks]
            counts = Counter(p.article_type for p in products)
            rare = min(counts, key=lambda a: (abs(counts[a] - n // 100), str(a)))
            rows = []
            for label, filters in (
                ("unfiltered", None),
                (f"articleType={rare}", {"article_type": rare}),
            ):
                e50, e95, exact = _latencies(
                    lambda q, f=filters: [
                        h.product.id
                        for h in catalog.vectors.nearest(version, q, 10, f, exact=True).neighbors
                    ],
                    queries,
                )
                h50, h95, approx = _latencies(
                    lambda q, f=filters: [
                        h.product.id for h in catalog.vectors.nearest(version, q, 10, f).neighbors
                    ],
                    queries,
                )
                recall = np.mean(
                    [len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact, strict=True)]
                )
                rows.append((label, e50, e95, h50, h95, recall))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    dim = settings.database.embedding_dim
    report.add(f"catalog benchmark: {n} products, {dim}-d vectors, {args.queries} queries")
    report.add(Table("bulk writes", ["bulk write", "seconds", "products/s", "ratio"], [
        ["row-by-row INSERT (base)", row_s, f"{n / row_s:.0f}", 1.0],
        ["COPY + upsert", copy_s, f"{n / copy_s:.0f}", row_s / copy_s],
    ]))  # fmt: skip
    header = ["k=10 query", "exact p50", "p95", "hnsw p50", "p95", "speed-up", "recall@10"]
    report.add(Table("nearest neighbours, exact (base) vs HNSW", header, [
        [label, f"{e50:.2f}ms", f"{e95:.2f}ms", f"{h50:.2f}ms", f"{h95:.2f}ms",
         f"{e50 / h50:.2f}x", f"{recall:.3f}"]
        for label, e50, e95, h50, h95, recall in rows
    ]))  # fmt: skip
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
