"""The products table as the repositories see it (aliased ``p`` in their queries): its columns,
derived from the product definition (:mod:`fashion_search.catalog.models`), and what every
repository shares."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

import psycopg
from psycopg import sql

from fashion_search.catalog.models import Product, ProductFields, value_type

_SQL_TYPES = {int: "integer", str: "text"}
#: Columns an upsert writes, in COPY order, with their PostgreSQL types: the product's fields,
#: then where its image is, its dataset and its image's fingerprint (embeddings go to their
#: version's partition).
WRITE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "bigint"),
    *(
        (name, _SQL_TYPES[value_type(field)])
        for name, field in ProductFields.model_fields.items()
        if name != "id"
    ),
    ("image_key", "text"),
    ("dataset", "text"),
    ("image_fingerprint", "bytea"),
)
#: What a product read returns: every column of a :class:`Product` the products table has
#: (its embedding and the version that made it are in a version's partition).
READ_COLUMNS = sql.SQL(", ").join(
    sql.Identifier("p", name)
    for name in Product.model_fields
    if name not in ("embedding", "model_version")
)


class Connections(Protocol):
    """Where a repository gets its connections: a pool of
    :func:`~fashion_search.catalog.db.create_pool`, or the replicas' reads
    (:class:`~fashion_search.catalog.replicas.ReplicatedReads`)."""

    def connection(
        self, timeout: float | None = None
    ) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection, given back when the block ends."""
        ...


class Table:
    """A repository over the catalog's tables through a pool of
    :func:`~fashion_search.catalog.db.create_pool`."""

    def __init__(self, pool: Connections) -> None:
        self.pool = pool
