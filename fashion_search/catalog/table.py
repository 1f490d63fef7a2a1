"""The products table as the repositories see it: its columns, derived from the product
definition (:mod:`fashion_search.catalog.models`), and what every repository shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from psycopg import sql
from psycopg_pool import ConnectionPool

from fashion_search.catalog.migrate import embedding_dimension
from fashion_search.catalog.models import Product, ProductFields, value_type
from fashion_search.errors import EmbeddingDimensionError, InvalidArgumentError

_SQL_TYPES = {int: "integer", str: "text"}
#: Columns an upsert writes, in COPY order, with their PostgreSQL types: the product's fields,
#: then where its image is, its dataset, and its embedding with the version that made it.
WRITE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "bigint"),
    *(
        (name, _SQL_TYPES[value_type(field)])
        for name, field in ProductFields.model_fields.items()
        if name != "id"
    ),
    ("image_key", "text"),
    ("dataset", "text"),
    ("model_version", "text"),
    ("embedding", "vector"),
)
#: What a read returns: every column of a :class:`Product` but the embedding.
READ_COLUMNS = sql.SQL(", ").join(
    sql.Identifier(name) for name in Product.model_fields if name != "embedding"
)


class Table:
    """A repository over the products table through a pool of
    :func:`~fashion_search.catalog.db.create_pool`."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool
        self._dimension: int | None = None

    @property
    def dimension(self) -> int:
        """The catalog's embedding dimension."""
        if self._dimension is None:
            with self.pool.connection() as conn:
                self._dimension = embedding_dimension(conn)
        return self._dimension

    def check_vector(self, vector: np.ndarray[Any, Any] | Sequence[float]) -> np.ndarray[Any, Any]:
        """``vector`` as float32 of the catalog's dimension, with finite values; else a typed
        error."""
        array = np.asarray(vector, dtype=np.float32)
        if array.ndim != 1 or array.shape[0] != self.dimension:
            raise EmbeddingDimensionError(self.dimension, array.shape[-1] if array.ndim else 0)
        if not np.all(np.isfinite(array)):
            raise InvalidArgumentError("embedding has NaN or infinite values")
        return array
