"""The catalog read as a dataset (source :data:`~fashion_search.dataset.CATALOG_SOURCE`), for
training on what the catalog has now: every product with known labels, and the uploads whose
labels can be trusted (a duplicate's, or every predicted label at confidence >= CONFIDENT), in
id order, each row in the dataset's layout with its image read back from the images bucket."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.models import ProductFields
from fashion_search.ingest.classify import CONFIDENT
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore

_WIRE = {name: field.alias or name for name, field in ProductFields.model_fields.items()}


def catalog_rows(settings: Settings, batch_rows: int = 256) -> Iterator[dict[str, Any]]:
    """The trusted products as dataset rows (fields by wire name, ``image.bytes``)."""
    query = sql.SQL(
        "SELECT {columns}, image_key FROM products WHERE source_key IS NULL"
        " OR (SELECT min(value::float) FROM jsonb_each_text(label_confidence)) >= %s"
        " ORDER BY id"
    ).format(columns=sql.SQL(", ").join(map(sql.Identifier, _WIRE)))
    store = ObjectStore(settings)
    bucket = settings.storage.images_bucket
    with (
        create_pool(settings) as pool,
        pool.connection() as conn,
        conn.transaction(),  # a named cursor streams in a transaction
        conn.cursor("catalog-snapshot", row_factory=dict_row) as cur,
        ThreadPoolExecutor(8, thread_name_prefix="snapshot-io") as io,
    ):
        cur.execute(query, (CONFIDENT,))
        while rows := cur.fetchmany(batch_rows):
            images = io.map(lambda row: store.get(bucket, row["image_key"]), rows)
            for row, image in zip(rows, images, strict=True):
                yield {**{_WIRE[name]: row[name] for name in _WIRE}, "image": {"bytes": image}}
