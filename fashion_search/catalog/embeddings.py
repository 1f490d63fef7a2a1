"""Embedding upkeep: which products lack an embedding of a model version, and storing them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fashion_search.catalog.table import Table
from fashion_search.errors import InvalidArgumentError


class EmbeddingRepository(Table):
    """The catalog's embeddings and the model versions that made them."""

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
        checked = [self.check_vector(v) for v in vectors]
        if not ids:
            return 0
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "UPDATE products SET embedding = %s, model_version = %s, updated_at = now()"
                " WHERE id = %s",
                [(v, model_version, i) for i, v in zip(ids, checked, strict=True)],
            )
            return int(cur.rowcount)
