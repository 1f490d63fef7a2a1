"""The product catalog in PostgreSQL + pgvector: upsert, read, list, nearest neighbours, delete.

Every method validates its whole input before it writes, and writes in one transaction: a
refused call (typed error from :mod:`fashion_search.errors`) leaves the catalog unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pydantic.alias_generators import to_camel

from fashion_search.catalog.filters import Filters, where_clause
from fashion_search.catalog.migrate import embedding_dimension
from fashion_search.catalog.models import (
    METADATA_FIELDS,
    UPLOADS_DATASET,
    Neighbor,
    Page,
    Product,
    UploadedProduct,
)
from fashion_search.errors import (
    EmbeddingDimensionError,
    InvalidArgumentError,
    InvalidProductError,
    ProductNotFoundError,
)

#: Columns written by an upsert, in COPY order, with their PostgreSQL types.
_WRITE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "bigint"),
    ("gender", "text"),
    ("master_category", "text"),
    ("sub_category", "text"),
    ("article_type", "text"),
    ("base_colour", "text"),
    ("season", "text"),
    ("year", "integer"),
    ("usage", "text"),
    ("product_display_name", "text"),
    ("image_key", "text"),
    ("dataset", "text"),
    ("model_version", "text"),
    ("embedding", "vector"),
)
_READ_COLUMNS = sql.SQL(", ").join(
    sql.Identifier(name)
    for name in (*(c for c, _ in _WRITE_COLUMNS if c != "embedding"), "created_at", "updated_at")
)
MAX_PAGE_SIZE = 1000
MAX_K = 1000


class CatalogRepository:
    """Catalog operations over a pool of :func:`~fashion_search.catalog.db.create_pool`."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool
        self._dimension: int | None = None
        self._ef_search: int | None = None

    @property
    def dimension(self) -> int:
        """The catalog's embedding dimension."""
        if self._dimension is None:
            with self.pool.connection() as conn:
                self._dimension = embedding_dimension(conn)
        return self._dimension

    @property
    def ef_search(self) -> int:
        """The HNSW candidate list size the pool's sessions search with."""
        if self._ef_search is None:
            with self.pool.connection() as conn:
                row = conn.execute("SELECT current_setting('hnsw.ef_search', true)").fetchone()
            self._ef_search = int(row[0]) if row and row[0] else 40  # pgvector's default
        return self._ef_search

    def _check_vector(self, vector: np.ndarray[Any, Any] | Sequence[float]) -> np.ndarray[Any, Any]:
        array = np.asarray(vector, dtype=np.float32)
        if array.ndim != 1 or array.shape[0] != self.dimension:
            raise EmbeddingDimensionError(self.dimension, array.shape[-1] if array.ndim else 0)
        if not np.all(np.isfinite(array)):
            raise InvalidArgumentError("embedding has NaN or infinite values")
        return array

    def upsert_many(self, products: Sequence[Product]) -> int:
        """Insert or update products by id (COPY into a staging table, then one upsert).

        A product without an embedding keeps the one already stored. Returns the row count.
        """
        ids = [p.id for p in products]
        if len(set(ids)) != len(ids):
            raise InvalidProductError("a batch lists the same product id more than once")
        for product in products:
            if product.embedding is not None:
                self._check_vector(product.embedding)
                if not product.model_version:
                    raise InvalidProductError(
                        f"product {product.id} has an embedding but no model_version"
                    )
        if not products:
            return 0
        columns = sql.SQL(", ").join(sql.Identifier(c) for c, _ in _WRITE_COLUMNS)
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
            for c, _ in _WRITE_COLUMNS
            if c not in ("id", "embedding", "model_version")
        )
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE staging_products"
                " (LIKE products INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            copy_sql = sql.SQL("COPY staging_products ({}) FROM STDIN (FORMAT BINARY)")
            with cur.copy(copy_sql.format(columns)) as copy:
                copy.set_types([t for _, t in _WRITE_COLUMNS])
                for p in products:
                    copy.write_row(
                        (
                            p.id, p.gender, p.master_category, p.sub_category, p.article_type,
                            p.base_colour, p.season, p.year, p.usage, p.product_display_name,
                            p.image_key, p.dataset,
                            p.model_version if p.embedding is not None else None,
                            p.embedding,
                        )
                    )  # fmt: skip
            cur.execute(
                sql.SQL(
                    "INSERT INTO products ({columns}) SELECT {columns} FROM staging_products"
                    " ON CONFLICT (id) DO UPDATE SET {updates},"
                    " model_version = CASE WHEN EXCLUDED.embedding IS NULL"
                    "   THEN products.model_version ELSE EXCLUDED.model_version END,"
                    " embedding = COALESCE(EXCLUDED.embedding, products.embedding),"
                    " updated_at = now()"
                ).format(columns=columns, updates=updates)
            )
            return int(cur.rowcount)

    def get(self, product_id: int, with_embedding: bool = False) -> Product:
        """One product by id; ProductNotFoundError when it does not exist."""
        extra = sql.SQL(", embedding") if with_embedding else sql.SQL("")
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                sql.SQL("SELECT {}{} FROM products WHERE id = %s").format(_READ_COLUMNS, extra),
                (product_id,),
            ).fetchone()
        if row is None:
            raise ProductNotFoundError(product_id)
        return Product.model_validate(row)

    def get_many(self, ids: Sequence[int]) -> list[Product]:
        """The products with these ids, in id order (missing ids are left out)."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                sql.SQL("SELECT {} FROM products WHERE id = ANY(%s) ORDER BY id").format(
                    _READ_COLUMNS
                ),
                (list(ids),),
            ).fetchall()
        return [Product.model_validate(row) for row in rows]

    def existing_ids(self, ids: Sequence[int]) -> set[int]:
        """The subset of ``ids`` that are in the catalog."""
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT id FROM products WHERE id = ANY(%s)", (list(ids),))
            return {int(row[0]) for row in rows}

    def count(self, filters: Filters | None = None) -> int:
        """Number of products matching the filters."""
        where, params = where_clause(filters)
        with self.pool.connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM products WHERE {}").format(where), params
            ).fetchone()
        return int(row[0]) if row else 0

    def facets(self) -> dict[str, list[str | int]]:
        """Distinct values of every metadata field (camelCase names), sorted."""
        selects = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {name}, array_agg(DISTINCT {col}::text) FROM products").format(
                name=sql.Literal(field), col=sql.Identifier(field)
            )
            for field in METADATA_FIELDS
        )
        with self.pool.connection() as conn:
            rows = conn.execute(selects).fetchall()
        return {
            to_camel(field): sorted(
                (int(v) if field == "year" else v for v in values or [] if v is not None),
                key=lambda v: (isinstance(v, str), v),
            )
            for field, values in rows
        }

    def list_products(
        self, filters: Filters | None = None, limit: int = 50, after: int | None = None
    ) -> Page:
        """Products in id order, ``limit`` per page, starting after the id ``after`` (keyset)."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(f"limit must be 1..{MAX_PAGE_SIZE}, got {limit}")
        where, params = where_clause(filters)
        query = sql.SQL(
            "SELECT {} FROM products WHERE {} AND id > %(after)s ORDER BY id LIMIT %(limit)s"
        ).format(_READ_COLUMNS, where)
        params.update(after=after if after is not None else 0, limit=limit + 1)
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query, params).fetchall()
        items = [Product.model_validate(r) for r in rows[:limit]]
        return Page(items=items, next_after=items[-1].id if len(rows) > limit else None)

    def nearest(
        self,
        vector: np.ndarray[Any, Any] | Sequence[float],
        k: int = 10,
        filters: Filters | None = None,
        exact: bool = False,
    ) -> list[Neighbor]:
        """The ``k`` products closest to ``vector`` by cosine similarity, best first.

        Uses the HNSW index with pgvector's iterative scan so that a selective filter still
        yields ``k`` rows; if the index scan ends short, the query is answered exactly.
        """
        candidates, params = self._candidates("hits", _READ_COLUMNS, vector, k, filters)
        query = sql.SQL("WITH {} SELECT * FROM hits ORDER BY distance, id").format(candidates)
        rows = self._search(query, params, exact=exact)
        if len(rows) < k and not exact:
            rows = self._search(query, params, exact=True)
        return [
            Neighbor(product=Product.model_validate(row), score=1.0 - float(row["distance"]))
            for row in rows
        ]

    def nearest_fused(
        self,
        vector: np.ndarray[Any, Any] | Sequence[float],
        ranked_ids: Sequence[int],
        k: int = 10,
        depth: int = 50,
        filters: Filters | None = None,
        *,
        rrf_k: int,
    ) -> list[Neighbor]:
        """The ``k`` best products by reciprocal rank fusion (constant ``rrf_k``) of the
        ``depth`` nearest to ``vector`` (as :meth:`nearest`) and ``ranked_ids`` (another
        ranking, best first, e.g. :meth:`title_match_ids`), with their fused scores; ties keep
        the vector ranking's order.

        One round trip: the candidates, their fusion and the winners' rows in one statement.
        The same numbers as :func:`~fashion_search.search.fusion.reciprocal_rank_fusion`.
        """
        if not 1 <= k <= depth:
            raise InvalidArgumentError(f"need 1 <= k <= depth, got {k} and {depth}")
        candidates, params = self._candidates("vector", sql.SQL("id"), vector, depth, filters)
        # Ranks: the vector candidates 1..depth, then the other ranking's depth+1...
        query = sql.SQL(
            "WITH {candidates}, ranked AS ("
            " SELECT id, row_number() OVER (ORDER BY distance, id) AS rank FROM vector"
            " UNION ALL SELECT id, %(k)s + rank FROM unnest(%(ids)s::bigint[])"
            "  WITH ORDINALITY AS other(id, rank)),"
            " fused AS ("
            " SELECT id, sum(1.0::float8 / (%(rrf_k)s + CASE WHEN rank > %(k)s"
            "  THEN rank - %(k)s ELSE rank END)) AS score, min(rank) AS first_seen"
            " FROM ranked GROUP BY id ORDER BY score DESC, first_seen LIMIT %(top)s)"
            " SELECT {columns}, fused.score, (SELECT count(*) FROM vector) AS candidates"
            " FROM fused JOIN products USING (id) ORDER BY fused.score DESC, fused.first_seen"
        ).format(candidates=candidates, columns=_READ_COLUMNS)
        params.update(ids=list(ranked_ids), rrf_k=rrf_k, top=k)
        rows = self._search(query, params, exact=False)
        if not rows or rows[0]["candidates"] < depth:  # the index scan ended short: exactly
            rows = self._search(query, params, exact=True)
        return [
            Neighbor(product=Product.model_validate(row), score=float(row["score"])) for row in rows
        ]

    def _candidates(
        self,
        name: str,
        columns: sql.Composable,
        vector: np.ndarray[Any, Any] | Sequence[float],
        k: int,
        filters: Filters | None,
    ) -> tuple[sql.Composed, dict[str, Any]]:
        """The common table expression ``name``: ``columns`` and ``distance`` of the ``k``
        products nearest to ``vector`` that pass ``filters``; and its parameters."""
        if not 1 <= k <= MAX_K:
            raise InvalidArgumentError(f"k must be 1..{MAX_K}, got {k}")
        query_vector = self._check_vector(vector)
        where, params = where_clause(filters)
        params.update(v=query_vector, k=k)
        cte = sql.SQL(
            "{name} AS MATERIALIZED ("
            " SELECT {columns}, embedding <=> %(v)s AS distance FROM products"
            " WHERE embedding IS NOT NULL AND {where} ORDER BY distance LIMIT %(k)s)"
        ).format(name=sql.Identifier(name), columns=columns, where=where)
        return cte, params

    def _search(
        self, query: sql.Composable, params: dict[str, Any], exact: bool
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
        self, text: str, k: int = 10, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        """Full-text matches of ``text`` on product titles (every word must match), best first,
        as ``(id, rank)`` pairs.

        The rank is PostgreSQL's ``ts_rank_cd``; words are stemmed, stop words dropped.
        """
        if not 1 <= k <= MAX_K:
            raise InvalidArgumentError(f"k must be 1..{MAX_K}, got {k}")
        where, params = where_clause(filters)
        query = sql.SQL(
            "SELECT id, ts_rank_cd(title_search, q) AS rank"
            " FROM products, plainto_tsquery('english', %(t)s) AS q"
            " WHERE title_search @@ q AND {where} ORDER BY rank DESC, id LIMIT %(k)s"
        ).format(where=where)
        params.update(t=text, k=k)
        with self.pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [(int(row[0]), float(row[1])) for row in rows]

    def ids_to_embed(self, model_version: str, limit: int, after: int = 0) -> list[int]:
        """Ids (after ``after``, in order) whose embedding is missing or from another version."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT id FROM products WHERE model_version IS DISTINCT FROM %s AND id > %s"
                " ORDER BY id LIMIT %s",
                (model_version, after, limit),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def count_to_embed(self, model_version: str) -> int:
        """How many products have no embedding from ``model_version``."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM products WHERE model_version IS DISTINCT FROM %s",
                (model_version,),
            ).fetchone()
        return int(row[0]) if row else 0

    def set_embeddings(
        self,
        ids: Sequence[int],
        vectors: np.ndarray[Any, Any] | Sequence[Sequence[float]],
        model_version: str,
    ) -> int:
        """Store embeddings of existing products (one transaction); returns rows updated."""
        if len(ids) != len(vectors):
            raise InvalidArgumentError(f"{len(ids)} ids but {len(vectors)} embeddings")
        if not model_version:
            raise InvalidArgumentError("model_version is empty")
        checked = [self._check_vector(v) for v in vectors]
        if not ids:
            return 0
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "UPDATE products SET embedding = %s, model_version = %s, updated_at = now()"
                " WHERE id = %s",
                [(v, model_version, i) for i, v in zip(ids, checked, strict=True)],
            )
            return int(cur.rowcount)

    def labelled_neighbours(
        self,
        vectors: Sequence[np.ndarray[Any, Any]] | np.ndarray[Any, Any],
        k: int,
        exclude_ids: Iterable[int] = (),
    ) -> list[list[Neighbor]]:
        """For each vector, the ``k`` nearest products whose labels are known (not predicted
        from an upload), best first; ``exclude_ids`` are never returned (held-out checks)."""
        if not 1 <= k <= MAX_K:
            raise InvalidArgumentError(f"k must be 1..{MAX_K}, got {k}")
        checked = [self._check_vector(v) for v in vectors]
        excluded = set(exclude_ids)
        # Filtering in SQL would let the planner leave the HNSW index; rows are filtered here.
        query = sql.SQL(
            "SELECT {columns}, source_key IS NOT NULL AS uploaded,"
            " embedding <=> %(v)s AS distance FROM products"
            " WHERE embedding IS NOT NULL ORDER BY distance LIMIT %(n)s"
        ).format(columns=_READ_COLUMNS)
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
                    ef_search = sql.Literal(max(session_ef_search, fetch))
                    cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(ef_search))
                    rows = cur.execute(query, {"v": vector, "n": fetch}).fetchall()
                    kept = [r for r in rows if not r["uploaded"] and r["id"] not in excluded][:k]
                    if len(kept) == k or len(rows) < fetch:
                        break
                    fetch *= 4
                result.append(
                    [
                        Neighbor(product=Product.model_validate(r), score=1.0 - r["distance"])
                        for r in kept
                    ]
                )
        return result

    def uploaded_products(
        self, bucket: str, keys: Sequence[str]
    ) -> dict[str, tuple[Product, str, dict[str, float]]]:
        """Products already made from keys of ``bucket``: key -> (product, ETag, confidence)."""
        query = sql.SQL(
            "SELECT {columns}, source_key, source_etag, label_confidence FROM products"
            " WHERE source_bucket = %s AND source_key = ANY(%s)"
        ).format(columns=_READ_COLUMNS)
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query, (bucket, list(keys))).fetchall()
        return {
            r["source_key"]: (Product.model_validate(r), r["source_etag"], r["label_confidence"])
            for r in rows
        }

    def save_upload(
        self, upload: UploadedProduct
    ) -> tuple[int, Literal["created", "updated", "duplicate"]]:
        """Insert the product of an uploaded object, idempotently.

        One product per (bucket, key): the same ETag again changes nothing (``duplicate``); a
        new ETag replaces its labels, image and embedding (``updated``).
        """
        vector = self._check_vector(upload.embedding)
        columns = [
            *upload.labels, "product_display_name", "image_key", "dataset", "model_version",
            "embedding", "source_bucket", "source_key", "source_etag", "label_confidence",
        ]  # fmt: skip
        values = [
            *upload.labels.values(), upload.product_display_name, upload.image_key,
            UPLOADS_DATASET, upload.model_version, vector, upload.source_bucket,
            upload.source_key, upload.source_etag, Jsonb(upload.confidence),
        ]  # fmt: skip
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
            for c in columns
            if c not in ("source_bucket", "source_key", "dataset")
        )
        query = sql.SQL(
            "INSERT INTO products ({columns}) VALUES ({values})"
            " ON CONFLICT (source_bucket, source_key) DO UPDATE SET {updates}, updated_at = now()"
            " WHERE products.source_etag IS DISTINCT FROM EXCLUDED.source_etag"
            " RETURNING id, xmax = 0 AS inserted"
        ).format(
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            values=sql.SQL(", ").join([sql.Placeholder()] * len(values)),
            updates=updates,
        )
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(query, values).fetchone()
            if row is not None:
                return int(row[0]), "created" if row[1] else "updated"
            existing = conn.execute(
                "SELECT id FROM products WHERE source_bucket = %s AND source_key = %s",
                (upload.source_bucket, upload.source_key),
            ).fetchone()
        assert existing is not None  # the conflicting row stays locked by this transaction
        return int(existing[0]), "duplicate"

    def delete(self, ids: Sequence[int]) -> int:
        """Delete products by id; returns how many existed."""
        with self.pool.connection() as conn, conn.transaction():
            cursor = conn.execute("DELETE FROM products WHERE id = ANY(%s)", (list(ids),))
            return int(cursor.rowcount)
