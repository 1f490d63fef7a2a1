"""A million products on this machine: pgvector's storage types against FAISS, in one run.

Builds a synthetic catalog of N products (default 1,000,000) from the real embeddings of the
running catalog's serving version (``make up`` first): each synthetic product is a real product's
embedding plus Gaussian noise of norm ``--noise``, renormalized, with that product's metadata
(so metadata is resampled with the catalog's own frequencies and stays tied to the vector).
Queries are further noisy copies of random catalog products, not in the table.

For each PostgreSQL variant, ``vector(512)``, ``halfvec(512)`` and ``bit(512)`` (binary
quantization of the vector column, re-ranked exactly), in a scratch database of the stack's
PostgreSQL: load time (binary COPY), HNSW build time, table and index size, the server's
resident memory, search p50/p95 at concurrency 1 and 8, unfiltered and under a ~1% filter
(``article_type``, pgvector's iterative scan), and recall@10 against exact search. In the same
run FAISS (``faiss-cpu``) HNSW with the same graph settings and exact search over the same vectors
in-process: the floor of this machine, which PostgreSQL's latencies are divided by.

    .venv/bin/python -m bench.scale --products 1000000 --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.report import Report, Table, add_markdown_option
from fashion_search.settings import get_settings
from stack.postgres import create_database

Vectors = np.ndarray[Any, Any]
K = 10
DIM = 512  # ViT-B/32's width: the vectors' dimension, whatever the serving model's
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64  # pgvector's defaults, used for FAISS too
RERANK = 100  # candidates of the binary index re-ranked by exact cosine distance


@dataclass(frozen=True)
class Synthetic:
    """The synthetic catalog and its queries."""

    vectors: Vectors  # (n, dim) float32, unit norm
    article_types: list[str]
    queries: Vectors  # (q, dim)
    rare: str  # the filter value (~1% of the products)


def _source(conninfo: str) -> tuple[Vectors, list[str]]:
    """The serving version's embeddings and article types of the running catalog."""
    with psycopg.connect(conninfo) as conn:
        register_vector(conn)
        row = conn.execute(
            "SELECT partition, dimension FROM catalog_versions WHERE state = 'serving'"
        ).fetchone()
        if row is None:
            raise SystemExit("the catalog has no serving version: run `make up` first")
        rows = conn.execute(
            sql.SQL(
                "SELECT e.embedding, coalesce(p.article_type, '') FROM {} e"
                " JOIN products p ON p.id = e.product_id ORDER BY p.id"
            ).format(sql.Identifier(row[0]))
        ).fetchall()
    return np.stack([r[0].to_numpy() for r in rows]).astype(np.float32), [r[1] for r in rows]


def lifted(base: Vectors, dim: int) -> Vectors:
    """``base`` in ``dim`` dimensions by a random orthonormal map: every cosine between two
    rows kept (a model of another width has other vectors, this one the same geometry)."""
    if base.shape[1] == dim:
        return base
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, base.shape[1])))
    return (base @ basis.T).astype(np.float32)


def _noisy(base: Vectors, picks: Vectors, noise: float, rng: np.random.Generator) -> Vectors:
    out = base[picks] + rng.standard_normal((len(picks), base.shape[1]), dtype=np.float32) * (
        noise / np.sqrt(base.shape[1])
    )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def synthesize(base: Vectors, types: list[str], n: int, queries: int, noise: float) -> Synthetic:
    """``n`` noisy resamples of the catalog and ``queries`` held-out noisy queries."""
    rng = np.random.default_rng(0)
    base = base / np.linalg.norm(base, axis=1, keepdims=True)
    picks = rng.integers(0, len(base), n)
    vectors = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        vectors[start : start + 100_000] = _noisy(base, picks[start : start + 100_000], noise, rng)
    article_types = [types[i] for i in picks]
    counts = Counter(article_types)
    rare = min(counts, key=lambda a: (abs(counts[a] - n / 100), a))
    query_vectors = _noisy(base, rng.integers(0, len(base), queries), noise, rng)
    return Synthetic(vectors, article_types, query_vectors, rare)


def exact_neighbours(vectors: Vectors, queries: Vectors, mask: Vectors | None) -> list[set[int]]:
    """Ids (row numbers) of the exact top ``K`` by cosine similarity, within ``mask``."""
    scores = vectors @ queries.T  # (n, q): one pass over the vectors
    if mask is not None:
        scores[~mask] = -np.inf
    top = np.argpartition(-scores, K, axis=0)[:K]
    return [set(top[:, j].tolist()) for j in range(len(queries))]


def recall(found: Sequence[Sequence[int]], exact: Sequence[set[int]]) -> float:
    """Mean share of the exact top ``K`` found."""
    return float(np.mean([len(set(f) & e) / K for f, e in zip(found, exact, strict=True)]))


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


@dataclass(frozen=True)
class Variant:
    """One way of storing and indexing the vectors in PostgreSQL."""

    name: str
    column: str  # the table's vector column type
    index: str  # the indexed expression and its operator class
    order: str  # the ORDER BY expression of a query (%(q)s the query vector)
    rerank: bool = False


VARIANTS = (
    Variant(
        f"vector({DIM})", f"vector({DIM})", "embedding vector_cosine_ops", "embedding <=> %(q)s"
    ),
    Variant(
        f"halfvec({DIM})", f"halfvec({DIM})", "embedding halfvec_cosine_ops", "embedding <=> %(q)s"
    ),
    Variant(
        f"bit({DIM}) + re-rank {RERANK}",
        f"vector({DIM})",
        f"(binary_quantize(embedding)::bit({DIM})) bit_hamming_ops",
        f"binary_quantize(embedding)::bit({DIM}) <~> binary_quantize(%(q)s)",
        rerank=True,
    ),
)


def _load(conninfo: str, table: str, column: str, data: Synthetic) -> float:
    """Create ``table`` and COPY the catalog into it: seconds of the COPY (then the filter's
    B-tree index and statistics)."""
    half = column.startswith("halfvec")
    with psycopg.connect(conninfo) as conn:
        register_vector(conn)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, article_type text NOT NULL,"
                " embedding {} NOT NULL)"
            ).format(sql.Identifier(table), sql.SQL(column))
        )
        started = time.perf_counter()
        with conn.cursor().copy(
            sql.SQL("COPY {} FROM STDIN WITH (FORMAT BINARY)").format(sql.Identifier(table))
        ) as copy:
            copy.set_types(["int8", "text", "halfvec" if half else "vector"])
            for i, (v, a) in enumerate(zip(data.vectors, data.article_types, strict=True)):
                copy.write_row((i, a, HalfVector(v) if half else v))
        conn.commit()
        seconds = time.perf_counter() - started
        conn.autocommit = True
        conn.execute(sql.SQL("CREATE INDEX ON {} (article_type)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        return seconds


def _build(conninfo: str, table: str, variant: Variant) -> tuple[float, int]:
    """Build the HNSW index; seconds and its size in bytes."""
    index = f"{table}_{abs(hash(variant.name)) % 10**6}_hnsw"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '8GB'")
        conn.execute(f"SET max_parallel_maintenance_workers = {max(1, (os.cpu_count() or 2) - 1)}")
        started = time.perf_counter()
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} USING hnsw ({}) WITH (m = {}, ef_construction = {})")
            .format(
                sql.Identifier(index), sql.Identifier(table), sql.SQL(variant.index),
                sql.Literal(HNSW_M), sql.Literal(HNSW_EF_CONSTRUCTION),
            )
        )  # fmt: skip
        seconds = time.perf_counter() - started
        size = conn.execute("SELECT pg_relation_size(%s::regclass)", (index,)).fetchone()
    return seconds, int(size[0]) if size else 0


def _drop_index(conninfo: str, table: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexname LIKE %s",
            (table, "%_hnsw"),
        ).fetchall():
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))


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


class PgSearch:
    """k-NN queries of one variant at one ``hnsw.ef_search``, a connection per thread; with
    ``ef_search`` None the HNSW index is not used: a filter's rows come from its B-tree (a
    bitmap scan) and are ranked exactly."""

    def __init__(
        self,
        conninfo: str,
        table: str,
        variant: Variant,
        ef_search: int | None,
        covering: bool = False,
    ) -> None:
        self.conninfo, self.variant, self.ef_search = conninfo, variant, ef_search
        self.covering = covering
        self.table = sql.Identifier(table)
        self._connections: dict[int, psycopg.Connection[Any]] = {}
        self._lock = threading.Lock()

    def _conn(self) -> psycopg.Connection[Any]:
        key = threading.get_ident()
        conn = self._connections.get(key)
        if conn is None:
            conn = psycopg.connect(self.conninfo, autocommit=True)
            register_vector(conn)
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
            if self.covering:  # the covering B-tree's index-only scan (HNSW: see query)
                conn.execute("SET enable_bitmapscan = off")
            elif self.ef_search is None:
                conn.execute("SET enable_indexscan = off")  # the bitmap scan stays
            else:
                ef = sql.Literal(self.ef_search)
                conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(ef))
            with self._lock:
                self._connections[key] = conn
        return conn

    def query(self, filtered: bool) -> sql.Composed:
        """The SQL of one k-NN query (parameters q, a, n, k)."""
        where = sql.SQL("WHERE article_type = %(a)s" if filtered else "")
        order = sql.SQL(self.variant.order)
        if self.covering:  # an expression no HNSW index orders by: ranked exactly
            order = sql.SQL("({}) + 0").format(order)
        inner = sql.SQL("SELECT id, embedding FROM {} {} ORDER BY {} LIMIT %(n)s").format(
            self.table, where, order
        )
        if not self.variant.rerank:
            return inner
        return sql.SQL("SELECT id FROM ({}) c ORDER BY embedding <=> %(q)s LIMIT %(k)s").format(
            inner
        )

    def search(self, data: Synthetic, filtered: bool) -> Callable[[int], list[int]]:
        """Query ``i`` of ``data``: the ids found."""
        query = self.query(filtered)
        half = self.variant.column.startswith("halfvec")
        n = RERANK if self.variant.rerank else K

        def run(i: int) -> list[int]:
            v = data.queries[i]
            params = {"q": HalfVector(v) if half else v, "a": data.rare, "n": n, "k": K}
            return [r[0] for r in self._conn().execute(query, params).fetchall()]

        return run

    def __enter__(self) -> PgSearch:
        return self

    def __exit__(self, *_: object) -> None:
        for conn in self._connections.values():
            conn.close()


#: (filtered, efSearch) -> the floor's p50 ms: FAISS HNSW unfiltered, FAISS exact filtered
Floor = dict[tuple[bool, int], float]


def _faiss_rows(
    data: Synthetic, mask: Vectors, exact: dict[bool, list[set[int]]], ef_values: Sequence[int]
) -> tuple[list[list[Any]], Floor]:
    """FAISS exact and HNSW searches: table rows and the floor."""
    import faiss

    process = psutil.Process()
    rss_before = process.memory_info().rss
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    hnsw = faiss.IndexHNSWFlat(data.vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    started = time.perf_counter()
    hnsw.add(data.vectors)
    build_s = time.perf_counter() - started
    hnsw_gib = (process.memory_info().rss - rss_before) / 2**30
    flat = faiss.IndexFlatIP(data.vectors.shape[1])
    flat.add(data.vectors)
    faiss.omp_set_num_threads(1)  # one query on one core, as one PostgreSQL backend runs it
    selector = faiss.IDSelectorBatch(np.flatnonzero(mask).astype(np.int64))
    rows: list[list[Any]] = []
    floor: Floor = {}
    n = len(data.queries)
    for filtered in (False, True):
        label = f"article_type={data.rare}" if filtered else "unfiltered"
        sel = selector if filtered else None

        def flat_search(i: int, sel: Any = sel) -> list[int]:
            found = flat.search(data.queries[i : i + 1], K, params=faiss.SearchParameters(sel=sel))
            return [int(j) for j in found[1][0]]

        t = timed(flat_search, n, 1)
        exact_p50 = t.p50_ms
        rows.append(["exact", label, "-", t.p50_ms, t.p95_ms, recall(t.answers, exact[filtered])])
        for ef in ef_values:
            params = faiss.SearchParametersHNSW(efSearch=ef, sel=sel)

            def hnsw_search(i: int, params: Any = params) -> list[int]:
                return [
                    int(j) for j in hnsw.search(data.queries[i : i + 1], K, params=params)[1][0]
                ]

            t = timed(hnsw_search, n, 1)
            # Filtered, FAISS's HNSW drops what the filter rejects during the graph walk and
            # finds few: the floor there is its exact search over the matching products.
            floor[filtered, ef] = exact_p50 if filtered else t.p50_ms
            rows.append([f"HNSW (built in {build_s:.0f} s, +{hnsw_gib:.2f} GiB resident)", label,
                         ef, t.p50_ms, t.p95_ms, recall(t.answers, exact[filtered])])  # fmt: skip
    return rows, floor


def _pg_rows(
    conninfo: str, table: str, variant: Variant, data: Synthetic,
    exact: dict[bool, list[set[int]]], ef_values: Sequence[int], target: float, floor: Floor,
) -> list[list[Any]]:  # fmt: skip
    """Searches of one variant: ef_search raised until recall reaches ``target``, then
    concurrency 8 at that ef_search."""
    rows: list[list[Any]] = []
    n = len(data.queries)
    for filtered in (False, True):
        label = f"article_type={data.rare}" if filtered else "unfiltered"
        chosen = ef_values[-1]
        for ef in ef_values:
            with PgSearch(conninfo, table, variant, ef) as pg:
                t = timed(pg.search(data, filtered), n, 1)
            r = recall(t.answers, exact[filtered])
            base = floor.get((filtered, ef))
            rows.append([variant.name, label, ef, 1, t.p50_ms, t.p95_ms, f"{t.qps:.0f}", r,
                         f"{t.p50_ms / base:.1f}x" if base else "-"])  # fmt: skip
            if r >= target:
                chosen = ef
                break
        with PgSearch(conninfo, table, variant, chosen) as pg:
            t = timed(pg.search(data, filtered), n, 8)
        rows.append([variant.name, label, chosen, 8, t.p50_ms, t.p95_ms, f"{t.qps:.0f}",
                     recall(t.answers, exact[filtered]), "-"])  # fmt: skip
    if variant.rerank:
        return rows
    # A selective filter ranked exactly over its rows instead: fetched from the heap through
    # the filter's B-tree (a bitmap scan), then from a covering B-tree that holds the ids and
    # vectors too (an index-only scan: the rows' vectors lie together, no heap page is read).
    label = f"article_type={data.rare}, exact over its rows"
    base = floor.get((True, ef_values[0]))
    for access in ("- (B-tree)", "- (covering B-tree)"):
        covering = access == "- (covering B-tree)"
        if covering:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("CREATE INDEX {} ON {} (article_type) INCLUDE (id, embedding)")
                    .format(sql.Identifier(f"{table}_covering"), sql.Identifier(table))
                )  # fmt: skip
                conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        for concurrency in (1, 8):
            with PgSearch(conninfo, table, variant, None, covering) as pg:
                t = timed(pg.search(data, True), n, concurrency)
            ratio = f"{t.p50_ms / base:.1f}x" if base and concurrency == 1 else "-"
            rows.append([variant.name, label, access, concurrency, t.p50_ms, t.p95_ms,
                         f"{t.qps:.0f}", recall(t.answers, exact[True]), ratio])  # fmt: skip
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(f"{table}_covering")))
    return rows


def main() -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.25, help="norm of the added noise")
    parser.add_argument("--ef-search", default="40,100,200", help="hnsw.ef_search values")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--no-faiss", action="store_true", help="skip the FAISS rows")
    parser.add_argument(
        "--variants", nargs="+", choices=[v.name for v in VARIANTS], help="default: all"
    )
    add_markdown_option(parser)
    args = parser.parse_args()
    ef_values = [int(v) for v in args.ef_search.split(",")]
    report = Report("bench.scale")

    settings = get_settings()
    catalog = make_conninfo(settings.database.url)
    started = time.perf_counter()
    source, types = _source(catalog)
    base = lifted(source, DIM)
    data = synthesize(base, types, args.products, args.queries, args.noise)
    n, dim = data.vectors.shape
    mask = np.array([a == data.rare for a in data.article_types])
    exact = {
        False: exact_neighbours(data.vectors, data.queries, None),
        True: exact_neighbours(data.vectors, data.queries, mask),
    }
    report.add(
        f"Synthetic catalog: {n:,} products from the {len(base):,} embeddings of the serving"
        f" version ({source.shape[1]}-d, mapped isometrically into {dim}-d) plus noise of norm"
        f" {args.noise}, their article types resampled with"
        f" them; filter article_type = {data.rare} ({mask.mean():.2%} of products);"
        f" {args.queries} held-out noisy queries; recall@{K} against exact search over the"
        f" float32 vectors; HNSW m={HNSW_M}, ef_construction={HNSW_EF_CONSTRUCTION}"
        f" (built in {time.perf_counter() - started:.0f} s)."
    )

    faiss_rows, floor = ([], {}) if args.no_faiss else _faiss_rows(data, mask, exact, ef_values)

    name = f"bench_scale_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(settings.database.url, dbname="postgres")
    create_database(admin, name)
    conninfo = make_conninfo(settings.database.url, dbname=name)
    storage: list[list[Any]] = []
    search_rows: list[list[Any]] = []
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        loaded: dict[str, float] = {}
        for variant in [v for v in VARIANTS if not args.variants or v.name in args.variants]:
            table = "items_half" if variant.column.startswith("halfvec") else "items"
            if table in loaded:
                _drop_index(conninfo, table)
            else:
                loaded[table] = _load(conninfo, table, variant.column, data)
            build_s, index_bytes = _build(conninfo, table, variant)
            with psycopg.connect(conninfo) as conn:
                row = conn.execute("SELECT pg_table_size(%s::regclass)", (table,)).fetchone()
            table_bytes = int(row[0]) if row else 0
            search_rows += _pg_rows(
                conninfo, table, variant, data, exact, ef_values, args.target_recall, floor
            )
            memory = _server_memory(conninfo)
            storage.append([variant.name, loaded[table], build_s, f"{table_bytes / 2**30:.2f}",
                            f"{index_bytes / 2**30:.2f}", f"{memory / 2**30:.2f}",
                            f"{(table_bytes + index_bytes) / n:.0f}"])  # fmt: skip
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    report.add(Table(
        f"PostgreSQL storage, {n:,} products",
        ["variant", "load s", "HNSW build s", "table GiB", "index GiB", "server PSS GiB",
         "bytes/product"],
        storage,
    ))  # fmt: skip
    report.add(Table(
        f"k={K} search in PostgreSQL: ef_search raised until recall@{K} >= {args.target_recall},"
        " then concurrency 8 at that ef_search; ratio: p50 / FAISS's p50 (HNSW at the same"
        " ef_search; filtered: FAISS exact over the matching products)",
        ["variant", "filter", "ef_search", "concurrency", "p50 ms", "p95 ms", "qps",
         f"recall@{K}", "p50 / FAISS"],
        search_rows,
    ))  # fmt: skip
    if faiss_rows:
        report.add(Table(
            "FAISS in-process, same vectors, one query at a time on one core (the floor)",
            ["index", "filter", "efSearch", "p50 ms", "p95 ms", f"recall@{K}"],
            faiss_rows,
        ))  # fmt: skip
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
