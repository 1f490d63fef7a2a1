"""Vector and hybrid search queries: nearest neighbours (HNSW, exact when the index scan ends
short), the similarity of given products (a title search's matches), full-text title matches,
and the labelled neighbours that vote on an upload's labels.

Every vector query reads the embeddings of one model version (its partition, aliased ``e``),
which the caller names: a query vector is only compared with vectors of the version that made
it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.rows import dict_row

from fashion_search.catalog.filters import Filters, where_clause
from fashion_search.catalog.limits import check_candidates, check_k
from fashion_search.catalog.models import Neighbor, Product
from fashion_search.catalog.table import READ_COLUMNS, Connections, Table
from fashion_search.catalog.versions import CatalogVersion

#: pgvector's largest ``hnsw.ef_search``.
MAX_EF_SEARCH = 1000
#: A hit's columns: the product's, and the version of the embeddings it was found by.
HIT_COLUMNS = sql.SQL("{}, e.model_version").format(READ_COLUMNS)


class VectorSearch(Table):
    """Searches over the catalog's embeddings and titles."""

    def __init__(self, pool: Connections) -> None:
        super().__init__(pool)
        self._ef_search: int | None = None

    @property
    def ef_search(self) -> int:
        """The HNSW candidate list size the pool's sessions search with."""
        if self._ef_search is None:
            with self.pool.connection() as conn:
                row = conn.execute("SELECT current_setting('hnsw.ef_search', true)").fetchone()
            self._ef_search = int(row[0]) if row and row[0] else 40  # pgvector's default
        return self._ef_search

    def nearest(
        self,
        version: CatalogVersion,
        vector: np.ndarray[Any, Any] | Sequence[float],
        k: int = 10,
        filters: Filters | None = None,
        exact: bool = False,
        exclude_id: int | None = None,
    ) -> list[Neighbor]:
        """The ``k`` products closest to ``vector`` by cosine similarity, best first (the
        product ``exclude_id`` left out).

        Uses the HNSW index with pgvector's iterative scan so that a selective filter still
        yields ``k`` rows; if the index scan ends short, the query is answered exactly.
        """
        candidates, params = self._candidates(
            "hits", HIT_COLUMNS, version, vector, k, filters, exclude_id
        )
        query = sql.SQL("WITH {} SELECT * FROM hits ORDER BY distance, id").format(candidates)
        rows = self._search(query, params, exact=exact)
        if len(rows) < k and not exact:
            rows = self._search(query, params, exact=True)
        return _by_similarity(rows)

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

    def _candidates(
        self,
        name: str,
        columns: sql.Composable,
        version: CatalogVersion,
        vector: np.ndarray[Any, Any] | Sequence[float],
        k: int,
        filters: Filters | None,
        exclude_id: int | None = None,
    ) -> tuple[sql.Composed, dict[str, Any]]:
        """The common table expression ``name``: ``columns`` and ``distance`` of the ``k``
        products nearest to ``vector`` among the embeddings of ``version`` that pass
        ``filters``; and its parameters."""
        check_candidates(k)
        query_vector = version.check_vector(vector)
        where, params = where_clause(filters)
        params.update(v=query_vector, k=k)
        if exclude_id is not None:
            where = sql.SQL("{} AND p.id <> %(exclude)s").format(where)
            params["exclude"] = exclude_id
        cte = sql.SQL(
            "{name} AS MATERIALIZED ("
            " SELECT {columns}, {distance} AS distance FROM {table} e"
            " JOIN products p ON p.id = e.product_id"
            " WHERE {where} ORDER BY distance LIMIT %(k)s)"
        ).format(
            name=sql.Identifier(name), columns=columns, distance=version.distance,
            table=version.table, where=where,
        )  # fmt: skip
        return cte, params

    def _search(
        self, query: sql.Composed, params: dict[str, Any], exact: bool
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]]
        ef_search = self.ef_search  # first read before taking a connection: it takes one
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            if not exact and params["k"] <= ef_search:  # the session's HNSW settings
                rows = cur.execute(query, params).fetchall()
                return rows
            with conn.transaction():
                if exact:
                    cur.execute("SET LOCAL enable_indexscan = off")
                else:
                    cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(
                        sql.Literal(params["k"])))  # fmt: skip
                rows = cur.execute(query, params).fetchall()
            return rows

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
            "{} WHERE p.source_key IS NULL AND p.id <> ALL(%(excluded)s)"
            " ORDER BY distance LIMIT %(n)s"
        ).format(select)
        result = []
        session_ef_search = self.ef_search  # before taking a connection (see _search)
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
                    cur.execute("SET LOCAL enable_indexscan = off")
                    params = {"v": vector, "n": k, "excluded": list(excluded)}
                    kept = cur.execute(exact, params).fetchall()
                    cur.execute("SET LOCAL enable_indexscan = on")
                result.append(
                    [
                        Neighbor(product=Product.model_validate(r), score=1.0 - r["distance"])
                        for r in kept
                    ]
                )
        return result


def _by_similarity(rows: Sequence[dict[str, Any]]) -> list[Neighbor]:
    """Rows with a cosine ``distance`` as neighbours scored by their similarity."""
    neighbors = []
    for row in rows:
        similarity = 1.0 - float(row["distance"])
        neighbors.append(
            Neighbor(product=Product.model_validate(row), score=similarity, similarity=similarity)
        )
    return neighbors
