"""Embedding upkeep: which products lack an embedding of a model version, and storing them in
that version's partition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from fashion_search.catalog.shards import WHOLE, Shard
from fashion_search.catalog.table import Table
from fashion_search.catalog.versions import CatalogVersion, version_record
from fashion_search.errors import InvalidArgumentError


def write_embeddings(
    conn: psycopg.Connection[Any],
    version: CatalogVersion,
    ids: Sequence[int],
    vectors: np.ndarray[Any, Any] | Sequence[np.ndarray[Any, Any] | Sequence[float]],
) -> int:
    """Insert or replace embeddings of ``version`` on ``conn`` (in the caller's transaction);
    ids of products that no longer exist are skipped. Returns the rows written."""
    if len(ids) != len(vectors):
        raise InvalidArgumentError(f"{len(ids)} ids but {len(vectors)} embeddings")
    checked = [version.check_vector(v) for v in vectors]
    if not ids:
        return 0
    query = sql.SQL(
        "INSERT INTO {} (model_version, product_id, embedding)"
        " SELECT %s, id, %s FROM products WHERE id = %s"
        " ON CONFLICT (model_version, product_id) DO UPDATE SET embedding = EXCLUDED.embedding"
    ).format(version.table)
    with conn.cursor() as cur:
        cur.executemany(
            query, [(version.model_version, v, i) for i, v in zip(ids, checked, strict=True)]
        )
        return int(cur.rowcount)


class EmbeddingRepository(Table):
    """The catalog's embeddings of each model version."""

    def ids_to_embed(
        self, version: CatalogVersion, limit: int, after: int = 0, shard: Shard = WHOLE
    ) -> list[int]:
        """Ids (after ``after``, in order, of ``shard``) of products without an embedding of
        ``version``."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT id FROM products p WHERE id > %s AND id %% %s = %s AND NOT EXISTS"
                    " (SELECT 1 FROM {} e WHERE e.product_id = p.id) ORDER BY id LIMIT %s"
                ).format(version.table),
                (after, shard.count, shard.index, limit),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def set_embeddings(
        self,
        model_version: str,
        ids: Sequence[int],
        vectors: np.ndarray[Any, Any] | Sequence[Sequence[float]],
    ) -> int:
        """Store embeddings of ``model_version`` for existing products (one transaction);
        returns rows written."""
        with self.pool.connection() as conn, conn.transaction():
            return write_embeddings(conn, version_record(conn, model_version), ids, vectors)
