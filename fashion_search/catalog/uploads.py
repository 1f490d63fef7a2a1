"""Upload bookkeeping: the product made from each uploaded object, idempotent per (bucket, key)
and object version (ETag)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from fashion_search.catalog.embeddings import write_embeddings
from fashion_search.catalog.models import UPLOADS_DATASET, Product, UploadedProduct
from fashion_search.catalog.table import READ_COLUMNS, Table
from fashion_search.catalog.versions import live_versions
from fashion_search.errors import NoServingVersionError, ServingVersionChangedError


def _lock_key(conn: psycopg.Connection[Any], bucket: str, key: str) -> None:
    """Serialize, until the transaction ends, every write of the product of ``bucket``/``key``
    (a transaction-scoped advisory lock on the pair's hash)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{bucket}/{key}",))


class UploadRepository(Table):
    """Products made from uploaded objects."""

    def uploaded_products(
        self, bucket: str, keys: Sequence[str]
    ) -> dict[str, tuple[Product, str, dict[str, float]]]:
        """Products already made from keys of ``bucket``: key -> (product, ETag, confidence)."""
        query = sql.SQL(
            "SELECT {columns}, source_key, source_etag, label_confidence FROM products p"
            " WHERE source_bucket = %s AND source_key = ANY(%s)"
        ).format(columns=READ_COLUMNS)
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query, (bucket, list(keys))).fetchall()
        return {
            r["source_key"]: (Product.model_validate(r), r["source_etag"], r["label_confidence"])
            for r in rows
        }

    def arrivals(self, since: datetime, label: str, last: int) -> tuple[int, list[float]]:
        """How many products were created after ``since``, and the confidence of ``label``
        (camelCase) of the newest ``last`` uploads among them."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM products WHERE created_at > %s", (since,)
            ).fetchone()
            confidences = conn.execute(
                "SELECT (label_confidence ->> %s)::float FROM products WHERE created_at > %s"
                " AND source_key IS NOT NULL AND label_confidence ? %s"
                " ORDER BY created_at DESC LIMIT %s",
                (label, since, label, last),
            ).fetchall()
        return (int(row[0]) if row else 0), [float(c) for (c,) in confidences]

    def uploaded_etags(self, bucket: str) -> dict[str, str]:
        """Every key of ``bucket`` the catalog holds a product of, with its ETag."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT source_key, source_etag FROM products WHERE source_bucket = %s", (bucket,)
            ).fetchall()
        return {str(key): str(etag) for key, etag in rows}

    def save_upload(
        self, upload: UploadedProduct, is_current: Callable[[], bool]
    ) -> tuple[int, Literal["created", "updated", "duplicate"]] | Literal["superseded"]:
        """Insert the product of an uploaded object, idempotently, if it is still the newest.

        Writes of one (bucket, key) take turns, and each asks ``is_current()`` (does the bucket
        still hold this ETag under the key?) in its turn: one that is not writes nothing
        (``superseded``). So whatever order concurrent deliveries of several versions run in,
        the version stored last is the one the bucket held last.

        One product per (bucket, key): the same ETag again changes nothing (``duplicate``); a
        new ETag replaces its labels, image and embeddings (``updated``). Its embeddings go to
        every live version it has one of; if the catalog's serving version is not among them
        (a switch happened since the caller read it), nothing is stored and
        :class:`ServingVersionChangedError` says to embed again.
        """
        columns = [
            *upload.labels, "product_display_name", "image_key", "image_fingerprint", "dataset",
            "source_bucket", "source_key", "source_etag", "label_confidence",
        ]  # fmt: skip
        values = [
            *upload.labels.values(), upload.product_display_name, upload.image_key,
            upload.image_fingerprint, UPLOADS_DATASET, upload.source_bucket, upload.source_key,
            upload.source_etag, Jsonb(upload.confidence),
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
            _lock_key(conn, upload.source_bucket, upload.source_key)
            if not is_current():
                return "superseded"
            row = conn.execute(query, values).fetchone()
            if row is not None:
                product_id, inserted = int(row[0]), bool(row[1])
                if not inserted:  # a new image: embeddings of the old one must go
                    conn.execute(
                        "DELETE FROM product_embeddings WHERE product_id = %s", (product_id,)
                    )
                # Read after the insert: a switch waits for this transaction, or came before.
                live = live_versions(conn)
                if not live or live[0].state != "serving":
                    raise NoServingVersionError("the catalog serves no model version yet")
                if live[0].model_version not in upload.embeddings:
                    raise ServingVersionChangedError(live[0].model_version)
                for version in live:
                    if version.model_version in upload.embeddings:
                        vector = upload.embeddings[version.model_version]
                        write_embeddings(conn, version, [product_id], [vector])
                return product_id, "created" if inserted else "updated"
            existing = conn.execute(
                "SELECT id FROM products WHERE source_bucket = %s AND source_key = %s",
                (upload.source_bucket, upload.source_key),
            ).fetchone()
        assert existing is not None  # the conflicting row stays locked by this transaction
        return int(existing[0]), "duplicate"

    def remove_upload(
        self, bucket: str, key: str, is_gone: Callable[[], bool]
    ) -> Product | Literal["superseded"] | None:
        """Delete the product made from ``bucket``/``key`` (its embeddings go with it) if
        ``is_gone()`` still holds in its turn among the key's writes (see :meth:`save_upload`);
        the product deleted, None when there was none, ``superseded`` when the key holds an
        object again."""
        query = sql.SQL(
            "DELETE FROM products p WHERE source_bucket = %s AND source_key = %s RETURNING {}"
        ).format(READ_COLUMNS)
        with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            _lock_key(conn, bucket, key)
            if not is_gone():
                return "superseded"
            row = cur.execute(query, (bucket, key)).fetchone()
        return None if row is None else Product.model_validate(row)
