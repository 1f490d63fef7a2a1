"""Upload bookkeeping: the product made from each uploaded object, idempotent per (bucket, key)
and object version (ETag)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from fashion_search.catalog.models import UPLOADS_DATASET, Product, UploadedProduct
from fashion_search.catalog.table import READ_COLUMNS, Table


class UploadRepository(Table):
    """Products made from uploaded objects."""

    def uploaded_products(
        self, bucket: str, keys: Sequence[str]
    ) -> dict[str, tuple[Product, str, dict[str, float]]]:
        """Products already made from keys of ``bucket``: key -> (product, ETag, confidence)."""
        query = sql.SQL(
            "SELECT {columns}, source_key, source_etag, label_confidence FROM products"
            " WHERE source_bucket = %s AND source_key = ANY(%s)"
        ).format(columns=READ_COLUMNS)
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
        vector = self.check_vector(upload.embedding)
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
