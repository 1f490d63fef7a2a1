"""Filtered search at a million products, through the product's own search path.

Builds a catalog of N synthetic products (default 1,000,000) in a scratch database of the
stack's PostgreSQL with the project's migrations and repositories: each product takes the
metadata of a random product of the dataset (so every filter value keeps the dataset's
frequency, and combinations their joint frequency) and a vector near its article type's,
colour's and gender's random directions, varied by a low-dimensional style and a little noise
(products of one type cluster, as a model's embeddings do). Queries are further products made
the same way, not in the table, of any type: a filter mostly names products far from the
query, the hard case for a graph index.

For filters of shares from 0.1% to 50% of the catalog, single and combined, it searches through
:class:`~fashion_search.search.service.SearchService` (vector mode, understanding off, the
query's vector given by a stand-in embedder) under three plans of the catalog's vector search
(decision 0047): the product's (exact over the filter's rows when the planner estimates at most
``exact_max_rows`` of them, else HNSW), HNSW only, and exact only. It reports recall@10 against
exact search over the float32 vectors, p50/p95 at concurrency 1, p50/p95 and req/s at
concurrency 8 (the product's plan), load and index build time, sizes and the server's memory,
and FAISS in the same run as the floor.

    .venv/bin/python -m bench.scale --products 1000000 --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil
import psycopg
import pyarrow.parquet as pq
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic.alias_generators import to_camel

from bench.report import Report, Table, add_markdown_option
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.models import FILTER_FIELDS
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import Embeddings, ModelInfo
from fashion_search.search.request import Refinements
from fashion_search.search.service import SearchService
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import ObjectStore
from stack.postgres import create_database

Vectors = np.ndarray[Any, Any]
K = 10
VERSION = "bench-scale-1"
#: The filter columns the synthetic products take from the dataset (``dataset`` is theirs).
COLUMNS = [name for name in FILTER_FIELDS if name != "dataset"]
#: Shares of the catalog the single filters are picked near.
SHARES = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5)
#: Pairs of fields whose joint values give the combined filters (near 1% and 10%).
PAIRS = (("gender", "article_type"), ("base_colour", "master_category"))
#: Products vary around their values' directions in a space of few dimensions (as a model's
#: embeddings do: a style, not independent noise in each of 512), plus a little noise.
LATENT, ISOTROPIC = 16, 0.1
PLANS = {"product": None, "HNSW only": 0, "exact only": 2**31 - 1}  # exact_max_rows
QUIET = Refinements(understand="off")


@dataclass(frozen=True)
class Synthetic:
    """The synthetic catalog and its queries."""

    metadata: dict[str, list[Any]]  # column -> value per product
    vectors: Vectors  # (n, dim) float32, unit norm
    queries: Vectors  # (q, dim)


def synthesize(source: str, n: int, queries: int, dim: int, noise: float) -> Synthetic:
    """``n`` products resampled from the dataset's metadata with clustered vectors, and
    ``queries`` held-out queries made the same way."""
    table = pq.read_table(source, columns=[to_camel(c) for c in COLUMNS]).to_pydict()
    rng = np.random.default_rng(0)
    rows = len(next(iter(table.values())))

    def directions(values: Sequence[Any]) -> dict[Any, Vectors]:
        return {
            v: rng.standard_normal(dim).astype(np.float32) for v in sorted(set(values), key=str)
        }

    parts = [("articleType", 1.0), ("baseColour", 0.5), ("gender", 0.3)]
    axes = {name: directions(table[name]) for name, _ in parts}
    latent = rng.standard_normal((LATENT, dim)).astype(np.float32) / np.sqrt(LATENT)

    def make(picks: Vectors) -> Vectors:
        out = np.empty((len(picks), dim), dtype=np.float32)
        for start in range(0, len(picks), 100_000):
            chunk = picks[start : start + 100_000]
            style = rng.standard_normal((len(chunk), LATENT)).astype(np.float32) @ latent
            v = noise * style + ISOTROPIC * rng.standard_normal((len(chunk), dim), np.float32)
            for name, weight in parts:
                v += weight * np.stack([axes[name][table[name][i]] for i in chunk])
            out[start : start + len(chunk)] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    picks = rng.integers(0, rows, n)
    table["year"] = [None if y is None or y != y else int(y) for y in table["year"]]  # NaN: None
    metadata = {c: [table[to_camel(c)][i] for i in picks] for c in COLUMNS}
    return Synthetic(metadata, make(picks), make(rng.integers(0, rows, queries)))


def pick_filters(data: Synthetic) -> list[dict[str, Any]]:
    """Single filters whose shares are nearest :data:`SHARES`, and pairs near 1% and 10%."""
    n = len(data.vectors)
    singles = Counter(
        (c, v) for c in COLUMNS if c != "year" for v in data.metadata[c] if v is not None
    )
    chosen: list[dict[str, Any]] = []
    for share in SHARES:
        (column, value), _ = min(singles.items(), key=lambda cv: abs(cv[1] / n - share))
        chosen.append({column: value})
    for (a, b), share in zip(PAIRS, (0.01, 0.1), strict=True):
        pairs = Counter(zip(data.metadata[a], data.metadata[b], strict=True))
        (va, vb), _ = min(pairs.items(), key=lambda p: abs(p[1] / n - share))
        chosen.append({a: va, b: vb})
    unique = {tuple(sorted(f.items())): f for f in chosen}
    return sorted(unique.values(), key=lambda f: -int(mask_of(data, f).sum()))


def mask_of(data: Synthetic, filters: dict[str, Any]) -> Vectors:
    """Which products pass ``filters``."""
    mask = np.ones(len(data.vectors), dtype=bool)
    for column, value in filters.items():
        mask &= np.array([v == value for v in data.metadata[column]])
    return mask


def exact_neighbours(vectors: Vectors, queries: Vectors, mask: Vectors | None) -> list[set[int]]:
    """Rows of the exact top ``K`` by cosine similarity, within ``mask``."""
    scores = vectors @ queries.T  # (n, q)
    if mask is not None:
        scores[~mask] = -np.inf
    top = np.argpartition(-scores, K, axis=0)[:K]
    return [set(top[:, j].tolist()) for j in range(len(queries))]


def recall(found: Sequence[Sequence[int]], exact: Sequence[set[int]]) -> float:
    """Mean share of the exact top ``K`` found."""
    return float(np.mean([len(set(f) & e) / K for f, e in zip(found, exact, strict=True)]))


@dataclass(frozen=True)
class Case:
    """One filter (none: unfiltered), made once: its label, which products pass it, and the
    exact top ``K`` of each query among them."""

    filters: dict[str, Any]
    label: str
    mask: Vectors | None  # None: every product
    truth: list[set[int]]

    @classmethod
    def of(cls, data: Synthetic, filters: dict[str, Any], n_queries: int) -> Case:
        """``filters``' case on ``data``'s first ``n_queries`` queries."""
        mask = mask_of(data, filters) if filters else None
        label = ", ".join(f"{c}={v}" for c, v in filters.items()) or "unfiltered"
        return cls(
            filters, label, mask, exact_neighbours(data.vectors, data.queries[:n_queries], mask)
        )

    @property
    def share(self) -> float:
        """The share of the catalog that passes."""
        return 1.0 if self.mask is None else float(self.mask.mean())


@dataclass(frozen=True)
class Timing:
    """Latencies of one run of the queries."""

    p50_ms: float
    p95_ms: float
    qps: float
    answers: list[list[int]]


def timed(search: Callable[[int], list[int]], n_queries: int, concurrency: int) -> Timing:
    """Run query ``i`` for every i on ``concurrency`` threads (after a warm-up of each)."""
    for i in range(min(concurrency, n_queries)):
        search(i)

    def one(i: int) -> tuple[float, list[int]]:
        started = time.perf_counter()
        answer = search(i)
        return (time.perf_counter() - started) * 1000, answer

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n_queries)))
    wall = time.perf_counter() - started
    times = [t for t, _ in results]
    return Timing(
        float(np.percentile(times, 50)),
        float(np.percentile(times, 95)),
        n_queries / wall,
        [a for _, a in results],
    )


class QueryVectors:
    """An embedder whose text ``"q<i>"`` is query vector ``i``: the service's path without a
    model."""

    def __init__(self, queries: Vectors) -> None:
        self.queries = queries

    def embed_texts(self, texts: Sequence[str], version: str | None = None) -> Embeddings:
        """The query vectors named."""
        return Embeddings(np.stack([self.queries[int(t[1:])] for t in texts]), VERSION)

    def embed_images(self, images: Sequence[bytes], version: str | None = None) -> Embeddings:
        """Not used."""
        raise NotImplementedError

    def info(self) -> ModelInfo:
        """The bench's version."""
        dim = self.queries.shape[1]
        return ModelInfo("bench", "bench", VERSION, dim, ["none"], False, versions={VERSION: dim})


def _copy(
    conn: psycopg.Connection[Any], table: str, columns: list[str], rows: Iterator[Any]
) -> None:
    with conn.cursor().copy(
        sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
    ) as copy:
        for row in rows:
            copy.write_row(row)


def build_catalog(settings: Settings, data: Synthetic) -> dict[str, float]:
    """The synthetic catalog through the catalog's own code: products, then the version's
    embeddings (the triggers copy the filter columns) without its HNSW index, which is built
    after (as a bulk load does). Seconds of each step and sizes."""
    n, dim = data.vectors.shape
    migrate(settings.database.url, dim)
    figures: dict[str, float] = {}
    with create_pool(settings) as pool:
        catalog = Catalog.of(pool)
        version = catalog.versions.bootstrap(VERSION, dim)
        catalog.versions.drop_index(VERSION)
        started = time.perf_counter()
        with pool.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 0")
            columns = ["id", "product_display_name", "image_key", "dataset", *COLUMNS]
            _copy(conn, "products", columns, (
                [i + 1, f"Product {i + 1}", f"images/{i + 1}.jpg", "catalog",
                 *(data.metadata[c][i] for c in COLUMNS)]
                for i in range(n)
            ))  # fmt: skip
        figures["products s"] = time.perf_counter() - started
        started = time.perf_counter()
        with pool.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 0")
            with conn.cursor().copy(
                sql.SQL(
                    "COPY {} (model_version, product_id, embedding) FROM STDIN (FORMAT BINARY)"
                ).format(version.table)
            ) as copy:
                copy.set_types(["text", "int8", "vector"])
                for i in range(n):
                    copy.write_row((VERSION, i + 1, data.vectors[i]))
        figures["embeddings s"] = time.perf_counter() - started
        started = time.perf_counter()
        catalog.versions.ensure_index(VERSION)
        figures["HNSW build s"] = time.perf_counter() - started
        with pool.connection() as conn:
            row = conn.execute(
                "SELECT pg_table_size(%(p)s::regclass), pg_relation_size(%(h)s::regclass),"
                " pg_indexes_size(%(p)s::regclass) - pg_relation_size(%(h)s::regclass),"
                " pg_total_relation_size('products')",
                {"p": version.partition, "h": f"{version.partition}_hnsw"},
            ).fetchone()
        assert row is not None
        for name, value in zip(
            ("partition GiB", "HNSW GiB", "B-trees GiB", "products GiB"), row, strict=True
        ):
            figures[name] = int(value) / 2**30
    return figures


def _server_memory(conninfo: str) -> int:
    """Proportional resident memory (PSS) of the PostgreSQL server's processes, in bytes."""
    with psycopg.connect(conninfo) as conn:  # the server: the parent of this session's backend
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        server = psutil.Process(int(row[0])).parent()
    assert server is not None
    total = 0
    for proc in [server, *server.children()]:
        with contextlib.suppress(psutil.Error):  # a backend that just ended
            total += proc.memory_full_info().pss
    return total


def search_rows(
    settings: Settings, data: Synthetic, cases: list[Case], n_queries: int,
    floor: dict[str, float],
) -> list[list[Any]]:  # fmt: skip
    """Each case under each plan (concurrency 1; the product's also at 8; unfiltered: the
    product's only)."""
    rows: list[list[Any]] = []
    for plan, exact_max_rows in PLANS.items():
        planned = settings if exact_max_rows is None else settings.replace(
            database={"exact_max_rows": exact_max_rows}
        )  # fmt: skip
        with create_pool(planned) as pool:
            service = SearchService(
                planned, Catalog.of(pool), ObjectStore(planned), QueryVectors(data.queries)
            )
            for case in cases if plan == "product" else [c for c in cases if c.filters]:
                exactness: list[bool] = []

                def search(
                    i: int, f: dict[str, Any] = case.filters, seen: list[bool] = exactness,
                    service: SearchService = service,
                ) -> list[int]:  # fmt: skip
                    result = service.text(f"q{i}", K, f, mode="vector", refine=QUIET)
                    seen.append(result.exact)
                    return [h.product.id - 1 for h in result.hits]

                base = floor.get(case.label)
                for concurrency in (1, 8) if plan == "product" else (1,):
                    t = timed(search, n_queries, concurrency)
                    rows.append([
                        case.label, f"{case.share:.2%}", plan, concurrency, t.p50_ms, t.p95_ms,
                        f"{t.qps:.0f}", recall(t.answers, case.truth),
                        f"{np.mean(exactness):.0%}",
                        f"{t.p50_ms / base:.1f}x" if base and concurrency == 1 else "-",
                    ])  # fmt: skip
                    exactness.clear()
    return rows


def faiss_rows(
    data: Synthetic, cases: list[Case], n_queries: int, ef_search: int
) -> tuple[list[list[Any]], dict[str, float]]:
    """FAISS exact over each filter's products, and HNSW unfiltered: rows and the floor."""
    import faiss

    process = psutil.Process()
    rss_before = process.memory_info().rss
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    hnsw = faiss.IndexHNSWFlat(data.vectors.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 64
    started = time.perf_counter()
    hnsw.add(data.vectors)
    build_s = time.perf_counter() - started
    hnsw_gib = (process.memory_info().rss - rss_before) / 2**30
    flat = faiss.IndexFlatIP(data.vectors.shape[1])
    flat.add(data.vectors)
    faiss.omp_set_num_threads(1)  # one query on one core, as one PostgreSQL backend runs it
    rows: list[list[Any]] = []
    floor: dict[str, float] = {}
    queries = data.queries[:n_queries]
    params = faiss.SearchParametersHNSW(efSearch=ef_search)
    t = timed(lambda i: [int(j) for j in hnsw.search(queries[i : i + 1], K, params=params)[1][0]],
              n_queries, 1)  # fmt: skip
    unfiltered, *filtered = cases
    floor[unfiltered.label] = t.p50_ms
    rows.append([f"HNSW (built in {build_s:.0f} s, +{hnsw_gib:.2f} GiB)", unfiltered.label,
                 ef_search, t.p50_ms, t.p95_ms, recall(t.answers, unfiltered.truth)])  # fmt: skip
    for case in filtered:
        ids = np.flatnonzero(case.mask)
        sel = faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids))
        t = timed(lambda i, sel=sel: [int(j) for j in flat.search(queries[i : i + 1], K,
                                                                  params=sel)[1][0]],
                  n_queries, 1)  # fmt: skip
        floor[case.label] = t.p50_ms
        rows.append(["exact over the filter's products", case.label, "-", t.p50_ms, t.p95_ms,
                     recall(t.answers, case.truth)])  # fmt: skip
    return rows, floor


def main() -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dim", type=int, default=512, help="ViT-B/32's width by default")
    parser.add_argument("--noise", type=float, default=1.0, help="scale of the products' style")
    parser.add_argument("--no-faiss", action="store_true", help="skip the FAISS rows")
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.scale")
    stack = get_settings()
    started = time.perf_counter()
    data = synthesize(stack.dataset_source, args.products, args.queries, args.dim, args.noise)
    cases = [Case.of(data, f, args.queries) for f in [{}, *pick_filters(data)]]
    n, dim = data.vectors.shape
    report.add(
        f"Synthetic catalog: {n:,} products with the metadata of random dataset products and"
        f" {dim}-d vectors (the article type's, colour's and gender's random directions,"
        f" weighted 1, 0.5 and 0.3, a {LATENT}-d style of scale {args.noise} and noise of"
        f" {ISOTROPIC}, normalised);"
        f" {args.queries} held-out queries made the same way; recall@{K} against exact search"
        f" over the float32 vectors (made in {time.perf_counter() - started:.0f} s). Searches"
        " through SearchService.text (vector mode, understanding off, k=10): the product's plan"
        f" (exact_max_rows={stack.database.exact_max_rows},"
        f" hnsw.max_scan_tuples={stack.database.hnsw_max_scan_tuples},"
        f" ef_search={stack.database.hnsw_ef_search}), HNSW only, exact only."
    )
    faiss_table, floor = ([], {}) if args.no_faiss else faiss_rows(data, cases, args.queries, 100)
    name = f"bench_scale_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(stack.database.url, dbname="postgres")
    create_database(admin, name)
    settings = stack.replace(
        database={"url": make_conninfo(stack.database.url, dbname=name)},
        search={"min_score": None},
    )
    with psycopg.connect(admin) as conn:
        buffers = conn.execute("SHOW shared_buffers").fetchone()
    report.add(f"PostgreSQL shared_buffers: {buffers[0] if buffers else '?'}.")
    try:
        figures = build_catalog(settings, data)
        rows = search_rows(settings, data, cases, args.queries, floor)
        memory = _server_memory(settings.database.url)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    total = sum(v for k, v in figures.items() if k.endswith("GiB")) * 2**30
    report.add(Table(
        f"Catalog of {n:,} products ({dim}-d vector embeddings), built through the catalog's code",
        [*figures, "server PSS GiB", "bytes/product"],
        [[*(f"{v:.2f}" for v in figures.values()), f"{memory / 2**30:.2f}", f"{total / n:.0f}"]],
    ))  # fmt: skip
    report.add(Table(
        f"k={K} searches through the search service; exact: share of answers marked exact;"
        " ratio: p50 / FAISS's p50 (HNSW unfiltered, exact over the filter's products)",
        ["filter", "share", "plan", "concurrency", "p50 ms", "p95 ms", "req/s", f"recall@{K}",
         "exact", "p50 / FAISS"],
        rows,
    ))  # fmt: skip
    if faiss_table:
        report.add(Table(
            "FAISS in-process, same vectors, one query at a time on one core (the floor)",
            ["index", "filter", "efSearch", "p50 ms", "p95 ms", f"recall@{K}"],
            faiss_table,
        ))  # fmt: skip
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
