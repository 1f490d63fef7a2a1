"""The products table as the repositories see it (aliased ``p`` in their queries): its columns,
derived from the product definition (:mod:`fashion_search.catalog.models`), and what every
repository shares."""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

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


class Table:
    """A repository over the catalog's tables through a pool of
    :func:`~fashion_search.catalog.db.create_pool`."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool
