"""Product reads and writes: upsert, get, list (keyset pages), count, facets, delete.

Every method validates its whole input before it writes, and writes in one transaction: a
refused call (typed error from :mod:`fashion_search.errors`) leaves the catalog unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql
from psycopg.rows import dict_row
from pydantic.alias_generators import to_camel

from fashion_search.catalog.filters import Filters, where_clause
from fashion_search.catalog.limits import MAX_PAGE_SIZE
from fashion_search.catalog.models import FILTER_FIELDS, METADATA_FIELDS, Page, Product
from fashion_search.catalog.table import READ_COLUMNS, WRITE_COLUMNS, Table
from fashion_search.errors import InvalidArgumentError, InvalidProductError, ProductNotFoundError


class ProductRepository(Table):
    """The catalog's products."""

    def upsert_many(self, products: Sequence[Product]) -> int:
        """Insert or update products by id (COPY into a staging table, then one upsert).

        A product without an embedding keeps the one already stored. Returns the row count.
        """
        ids = [p.id for p in products]
        if len(set(ids)) != len(ids):
            raise InvalidProductError("a batch lists the same product id more than once")
        for product in products:
            if product.embedding is not None:
                self.check_vector(product.embedding)
                if not product.model_version:
                    raise InvalidProductError(
                        f"product {product.id} has an embedding but no model_version"
                    )
        if not products:
            return 0
        names = [c for c, _ in WRITE_COLUMNS]
        columns = sql.SQL(", ").join(map(sql.Identifier, names))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
            for c in names
            if c not in ("id", "embedding", "model_version")
        )
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE staging_products"
                " (LIKE products INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            copy_sql = sql.SQL("COPY staging_products ({}) FROM STDIN (FORMAT BINARY)")
            with cur.copy(copy_sql.format(columns)) as copy:
                copy.set_types([t for _, t in WRITE_COLUMNS])
                for p in products:
                    row = {name: getattr(p, name) for name in names}
                    if p.embedding is None:
                        row["model_version"] = None
                    copy.write_row(list(row.values()))
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
                sql.SQL("SELECT {}{} FROM products WHERE id = %s").format(READ_COLUMNS, extra),
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
                    READ_COLUMNS
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
                (FILTER_FIELDS[field](v) for v in values or [] if v is not None),
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
        ).format(READ_COLUMNS, where)
        params.update(after=after if after is not None else 0, limit=limit + 1)
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query, params).fetchall()
        items = [Product.model_validate(r) for r in rows[:limit]]
        return Page(items=items, next_after=items[-1].id if len(rows) > limit else None)

    def delete(self, ids: Sequence[int]) -> int:
        """Delete products by id; returns how many existed."""
        with self.pool.connection() as conn, conn.transaction():
            cursor = conn.execute("DELETE FROM products WHERE id = ANY(%s)", (list(ids),))
            return int(cursor.rowcount)
