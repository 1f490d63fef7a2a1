"""Vector and hybrid search queries: nearest neighbours (a selective filter's rows ranked
exactly, else HNSW, exact when the index scan ends short), the similarity of given products (a
title search's matches), full-text title matches, and the labelled neighbours that vote on an
upload's labels.

Every vector query reads the embeddings of one model version (its partition, aliased ``e``, which
holds a copy of each product's filter columns), which the caller names: a query vector is only
compared with vectors of the version that made it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg import Cursor, sql
from psycopg.rows import dict_row

from fashion_search.catalog.filters import Filters, where_clause
from fashion_search.catalog.limits import check_candidates, check_k
from fashion_search.catalog.models import Neighbor, Product
from fashion_search.catalog.table import READ_COLUMNS, Connections, Table
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.settings import DatabaseSettings

#: pgvector's largest ``hnsw.ef_search``.
MAX_EF_SEARCH = 1000
#: A hit's columns: the product's, and the version of the embeddings it was found by.
HIT_COLUMNS = sql.SQL("{}, e.model_version").format(READ_COLUMNS)


@dataclass(frozen=True)
class Nearest:
    """A nearest-neighbour search's hits, best first, and whether they are exactly the nearest
    (False: from the HNSW index, approximate)."""

    neighbors: list[Neighbor]
    exact: bool


class VectorSearch(Table):
    """Searches over the catalog's embeddings and titles."""

    def __init__(self, pool: Connections) -> None:
        super().__init__(pool)
        self._plan: tuple[int, int] | None = None

    def _session_plan(self) -> tuple[int, int]:
        """The pool's sessions' ``hnsw.ef_search`` and ``fashion_search.exact_max_rows``
        (:func:`~fashion_search.catalog.db.create_pool`), read once."""
        if self._plan is None:
            with self.pool.connection() as conn:
                row = conn.execute(
                    "SELECT current_setting('hnsw.ef_search', true),"
                    " current_setting('fashion_search.exact_max_rows', true)"
                ).fetchone()
            assert row is not None
            self._plan = (
                int(row[0]) if row[0] else 40,  # pgvector's default
                int(row[1]) if row[1] else DatabaseSettings.model_fields["exact_max_rows"].default,
            )
        return self._plan

    @property
    def ef_search(self) -> int:
        """The HNSW candidate list size the pool's sessions search with."""
        return self._session_plan()[0]

    def nearest(
        self,
        version: CatalogVersion,
        vector: np.ndarray[Any, Any] | Sequence[float],
        k: int = 10,
        filters: Filters | None = None,
        exact: bool = False,
        exclude_id: int | None = None,
    ) -> Nearest:
        """The ``k`` products closest to ``vector`` by cosine similarity, best first (the
        product ``exclude_id`` left out), and whether they are exactly the closest.

        The plan (decision 0047): a filter whose rows the planner estimates at most
        ``exact_max_rows`` is ranked exactly over those rows (through its indexes in the
        partition); else the HNSW index is walked by pgvector's iterative scan, the filter
        checked on each row, up to ``hnsw.max_scan_tuples``; if that ends short of ``k``, the
        search is answered exactly. So ``k`` products come back whenever ``k`` match.
        """
        check_candidates(k)
        query_vector = version.check_vector(vector)
        where, params = where_clause(filters, alias="e")
        params.update(v=query_vector, k=k)
        if exclude_id is not None:
            where = sql.SQL("{} AND e.product_id <> %(exclude)s").format(where)
            params["exclude"] = exclude_id
        ef_search, exact_max_rows = self._session_plan()  # before taking a connection
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            if not exact and filters:
                exact = _estimated_rows(cur, version, where, params) <= exact_max_rows
            rows = _fetch(cur, _nearest_query(version, where, exact), params, exact, ef_search)
            if len(rows) < k and not exact:
                exact = True
                rows = _fetch(cur, _nearest_query(version, where, exact), params, exact, ef_search)
        return Nearest(_by_similarity(rows), exact)

    def of_ids(
        self,
        version: CatalogVersion,
        vector: np.ndarray[Any, Any] | Sequence[float],
        ids: Sequence[int],
    ) -> list[Neighbor]:
        """The products ``ids`` that have an embedding of ``version``, with their cosine
        similarity to ``vector`` (as score), most similar first."""
        query = sql.SQL(
            "SELECT {columns}, {distance} AS distance FROM {table} e"
            " JOIN products p ON p.id = e.product_id WHERE p.id = ANY(%(ids)s)"
            " ORDER BY distance, p.id"
        ).format(columns=HIT_COLUMNS, distance=version.distance, table=version.table)
        params = {"v": version.check_vector(vector), "ids": list(ids)}
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query, params).fetchall()
        return _by_similarity(rows)

    def title_match_ids(
        self,
        text: str,
        k: int = 10,
        filters: Filters | None = None,
        excluded: Sequence[str] = (),
        alternatives: Sequence[Sequence[str]] = (),
    ) -> list[tuple[int, float]]:
        """Full-text matches of ``text`` on product titles (every word must match, and one
        text of each group of ``alternatives``) that match none of the ``excluded`` texts,
        best first, as ``(id, rank)`` pairs.

        The rank is PostgreSQL's ``ts_rank_cd``; words are stemmed, stop words dropped.
        """
        check_candidates(k)
        where, params = where_clause(filters)
        wanted: sql.Composable = sql.SQL("plainto_tsquery('english', %(t)s)")
        for g, group in enumerate(alternatives):
            either = sql.SQL(" || ").join(
                sql.SQL("plainto_tsquery('english', {})").format(sql.Placeholder(f"a{g}_{i}"))
                for i in range(len(group))
            )
            wanted = sql.SQL("{} && ({})").format(wanted, either)
            params |= {f"a{g}_{i}": alt for i, alt in enumerate(group)}
        if excluded:
            where = sql.SQL(
                "{} AND NOT EXISTS (SELECT FROM unnest(%(excluded)s::text[]) AS x(t)"
                " WHERE title_search @@ plainto_tsquery('english', x.t))"
            ).format(where)
            params["excluded"] = list(excluded)
        query = sql.SQL(
            "SELECT id, ts_rank_cd(title_search, w.q) AS rank"
            " FROM products p, (SELECT {wanted} AS q) w"
            " WHERE title_search @@ w.q AND {where} ORDER BY rank DESC, id LIMIT %(k)s"
        ).format(wanted=wanted, where=where)
        params.update(t=text, k=k)
        with self.pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [(int(row[0]), float(row[1])) for row in rows]

    def labelled_neighbours(
        self,
        version: CatalogVersion,
        vectors: Sequence[np.ndarray[Any, Any]] | np.ndarray[Any, Any],
        k: int,
        exclude_ids: Iterable[int] = (),
    ) -> list[list[Neighbor]]:
        """For each vector (of ``version``), the ``k`` nearest products whose labels are known
        (not predicted from an upload), best first; ``exclude_ids`` are never returned
        (held-out checks)."""
        check_k(k)
        checked = [version.check_vector(v) for v in vectors]
        excluded = set(exclude_ids)
        # Filtering in SQL would let the planner leave the HNSW index; rows are filtered here,
        # from ever more candidates (iterative scans go past ef_search, which pgvector caps),
        # and if uploads crowd the neighbourhood beyond that, exactly, filtered in SQL.
        select = sql.SQL(
            "SELECT {columns}, p.source_key IS NOT NULL AS uploaded, {distance} AS distance"
            " FROM {table} e JOIN products p ON p.id = e.product_id"
        ).format(columns=HIT_COLUMNS, distance=version.distance, table=version.table)
        query = sql.SQL("{} ORDER BY distance LIMIT %(n)s").format(select)
        exact = sql.SQL(
            "{} WHERE p.source_key IS NULL AND p.id <> ALL(%(excluded)s) ORDER BY {} LIMIT %(n)s"
        ).format(select, _exact_order(version))
        result = []
        session_ef_search = self.ef_search  # before taking a connection (see nearest)
        with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            for vector in checked:  # iterative scans: the session's setting (create_pool)
                fetch = 2 * k
                while True:
                    ef_search = sql.Literal(min(max(session_ef_search, fetch), MAX_EF_SEARCH))
                    cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(ef_search))
                    rows = cur.execute(query, {"v": vector, "n": fetch}).fetchall()
                    kept = [r for r in rows if not r["uploaded"] and r["id"] not in excluded][:k]
                    if len(kept) == k or len(rows) < fetch or fetch >= MAX_EF_SEARCH:
                        break
                    fetch *= 4
                if len(kept) < k and len(rows) == fetch:  # crowded by uploads: exactly
                    params = {"v": vector, "n": k, "excluded": list(excluded)}
                    kept = cur.execute(exact, params).fetchall()
                result.append(
                    [
                        Neighbor(product=Product.model_validate(r), score=1.0 - r["distance"])
                        for r in kept
                    ]
                )
        return result


def _exact_order(version: CatalogVersion) -> sql.Composed:
    """An ORDER BY of the cosine distance that no HNSW index serves (``+ 0``): the planner
    ranks every row that passes the query's filters (their B-trees, or every row) exactly, and
    still joins products by their key (``enable_indexscan = off`` would join them by hash)."""
    return sql.SQL("({}) + 0").format(version.distance)


def _nearest_query(version: CatalogVersion, where: sql.Composable, exact: bool) -> sql.Composed:
    """The ``k`` nearest rows passing ``where`` (exactly, or through the HNSW index), then
    their products."""
    return sql.SQL(
        "WITH hits AS MATERIALIZED ("
        " SELECT e.product_id, e.model_version, {distance} AS distance FROM {table} e"
        " WHERE {where} ORDER BY {order} LIMIT %(k)s)"
        " SELECT {columns}, h.model_version, h.distance FROM hits h"
        " JOIN products p ON p.id = h.product_id ORDER BY h.distance, p.id"
    ).format(
        distance=version.distance, table=version.table, where=where, columns=READ_COLUMNS,
        order=_exact_order(version) if exact else version.distance,
    )  # fmt: skip


def _estimated_rows(
    cur: Cursor[dict[str, Any]], version: CatalogVersion, where: sql.Composable,
    params: dict[str, Any],
) -> float:  # fmt: skip
    """The planner's estimate of the rows of ``version``'s partition that pass ``where``."""
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} e WHERE {}").format(
        version.table, where
    )
    row = cur.execute(query, params).fetchone()
    assert row is not None
    return float(row["QUERY PLAN"][0]["Plan"]["Plan Rows"])


def _fetch(
    cur: Cursor[dict[str, Any]], query: sql.Composed, params: dict[str, Any], exact: bool,
    ef_search: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """``query``'s rows; through the HNSW index for more than the session's ``ef_search``
    rows, with ``hnsw.ef_search`` raised to ``k`` for this query."""
    if exact or params["k"] <= ef_search:
        return cur.execute(query, params).fetchall()
    with cur.connection.transaction():
        cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(params["k"])))
        return cur.execute(query, params).fetchall()


def _by_similarity(rows: Sequence[dict[str, Any]]) -> list[Neighbor]:
    """Rows with a cosine ``distance`` as neighbours scored by their similarity."""
    neighbors = []
    for row in rows:
        similarity = 1.0 - float(row["distance"])
        neighbors.append(
            Neighbor(product=Product.model_validate(row), score=similarity, similarity=similarity)
        )
    return neighbors
