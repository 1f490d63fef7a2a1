"""Product reads and writes: upsert, get, list (keyset pages), count, facets and value counts,
fingerprint backfill, delete.

Every method validates its whole input before it writes, and writes in one transaction: a
refused call (typed error from :mod:`fashion_search.errors`) leaves the catalog unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from psycopg import sql
from psycopg.rows import dict_row
from pydantic.alias_generators import to_camel

from fashion_search.catalog.embeddings import write_embeddings
from fashion_search.catalog.filters import Filters, where_clause
from fashion_search.catalog.limits import MAX_PAGE_SIZE
from fashion_search.catalog.models import FILTER_FIELDS, METADATA_FIELDS, Page, Product
from fashion_search.catalog.table import READ_COLUMNS, WRITE_COLUMNS, Connections, Table
from fashion_search.catalog.versions import CatalogVersion, version_record
from fashion_search.errors import InvalidArgumentError, InvalidProductError, ProductNotFoundError

#: camelCase field name -> (value, how many products have it) pairs.
ValueCounts = dict[str, list[tuple[str | int, int]]]


class ProductRepository(Table):
    """The catalog's products; on replicas (``primary`` given), a product missing there is
    looked up on the primary too (read-your-writes: one just uploaded is found at once)."""

    def __init__(self, pool: Connections, primary: ProductRepository | None = None) -> None:
        super().__init__(pool)
        self.primary = primary

    def upsert_many(self, products: Sequence[Product]) -> int:
        """Insert or update products by id (COPY into a staging table, then one upsert), and
        the embeddings they carry into their versions' partitions.

        A product without an embedding keeps the ones already stored. Returns the row count.
        """
        ids = [p.id for p in products]
        if len(set(ids)) != len(ids):
            raise InvalidProductError("a batch lists the same product id more than once")
        embedded: dict[str, list[Product]] = defaultdict(list)
        for product in products:
            if product.embedding is not None:
                if not product.model_version:
                    raise InvalidProductError(
                        f"product {product.id} has an embedding but no model_version"
                    )
                embedded[product.model_version].append(product)
        if not products:
            return 0
        names = [c for c, _ in WRITE_COLUMNS]
        columns = sql.SQL(", ").join(map(sql.Identifier, names))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in names if c != "id"
        )
        # One transaction: an embedding write_embeddings refuses leaves no product written.
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE staging_products"
                " (LIKE products INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            copy_sql = sql.SQL("COPY staging_products ({}) FROM STDIN (FORMAT BINARY)")
            with cur.copy(copy_sql.format(columns)) as copy:
                copy.set_types([t for _, t in WRITE_COLUMNS])
                for p in products:
                    copy.write_row([getattr(p, name) for name in names])
            cur.execute(
                sql.SQL(
                    "INSERT INTO products ({columns}) SELECT {columns} FROM staging_products"
                    " ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now()"
                ).format(columns=columns, updates=updates)
            )
            count = int(cur.rowcount)
            for version, items in embedded.items():
                write_embeddings(
                    conn, version_record(conn, version), [p.id for p in items],
                    [p.embedding for p in items],  # type: ignore[misc]
                )  # fmt: skip
            return count

    def get(self, product_id: int, version: CatalogVersion | None = None) -> Product:
        """One product by id, with its embedding of ``version`` (if it has one) when a version
        is named; ProductNotFoundError when it does not exist."""
        extra: sql.Composable = sql.SQL("")
        join: sql.Composable = sql.SQL("")
        params = {"id": product_id}
        if version is not None:
            extra = sql.SQL(", e.embedding, e.model_version")
            join = sql.SQL(" LEFT JOIN {} e ON e.product_id = p.id").format(version.table)
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                sql.SQL("SELECT {}{} FROM products p{} WHERE p.id = %(id)s").format(
                    READ_COLUMNS, extra, join
                ),
                params,
            ).fetchone()
        if row is None:
            if self.primary is not None:
                return self.primary.get(product_id, version)
            raise ProductNotFoundError(product_id)
        return Product.model_validate(row)

    def get_many(self, ids: Sequence[int]) -> list[Product]:
        """The products with these ids, in id order (missing ids are left out)."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                sql.SQL("SELECT {} FROM products p WHERE id = ANY(%s) ORDER BY id").format(
                    READ_COLUMNS
                ),
                (list(ids),),
            ).fetchall()
        found = [Product.model_validate(row) for row in rows]
        missing = set(ids) - {p.id for p in found}
        if missing and self.primary is not None:
            found = sorted(found + self.primary.get_many(sorted(missing)), key=lambda p: p.id)
        return found

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

    def title_words(self) -> dict[str, int]:
        """Each lower-cased word of the product titles (letters only) -> how many titles have
        it (query understanding reads no word of a title as a typo)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT w, count(DISTINCT p.id) FROM products p,"
                " regexp_split_to_table(lower(p.product_display_name), '[^a-z]+') AS w"
                " WHERE w <> '' GROUP BY w"
            ).fetchall()
        return {str(word): int(n) for word, n in rows}

    def value_counts(self, filters: Filters | None = None) -> ValueCounts:
        """How many of the products matching the filters have each value of every metadata
        field (camelCase names; missing values not counted)."""
        where, params = where_clause(filters)
        selects = sql.SQL(" UNION ALL ").join(
            sql.SQL(
                "SELECT {name}, {col}::text, count(*) FROM products"
                " WHERE {where} AND {col} IS NOT NULL GROUP BY {col}"
            ).format(name=sql.Literal(field), col=sql.Identifier(field), where=where)
            for field in METADATA_FIELDS
        )
        counts: ValueCounts = {to_camel(f): [] for f in METADATA_FIELDS}
        with self.pool.connection() as conn:
            for field, value, count in conn.execute(selects, params).fetchall():
                counts[to_camel(field)].append((FILTER_FIELDS[field](value), int(count)))
        return counts

    def fill_fingerprints(self, fingerprints: dict[int, bytes]) -> int:
        """Store the image fingerprints of the products that have none yet (products loaded
        before fingerprints existed); returns how many were filled."""
        if not fingerprints:
            return 0
        with self.pool.connection() as conn, conn.transaction():
            cursor = conn.execute(
                "UPDATE products p SET image_fingerprint = f.print"
                " FROM unnest(%s::bigint[], %s::bytea[]) AS f(id, print)"
                " WHERE p.id = f.id AND p.image_fingerprint IS NULL",
                (list(fingerprints), list(fingerprints.values())),
            )
            return int(cursor.rowcount)

    def list_products(
        self, filters: Filters | None = None, limit: int = 50, after: int | None = None
    ) -> Page:
        """Products in id order, ``limit`` per page, starting after the id ``after`` (keyset)."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(f"limit must be 1..{MAX_PAGE_SIZE}, got {limit}")
        where, params = where_clause(filters)
        query = sql.SQL(
            "SELECT {} FROM products p WHERE {} AND id > %(after)s ORDER BY id LIMIT %(limit)s"
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
