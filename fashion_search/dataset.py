"""Product dataset reader: a local parquet file/folder, a Hugging Face dataset id, or
``catalog``: the catalog's trusted products (:mod:`fashion_search.catalog.snapshot`).

Rows come in the layout of ``ashraq/fashion-product-images-small`` (id, gender, masterCategory,
..., productDisplayName, image{bytes, path}). Each valid row becomes a :class:`DatasetItem`;
each invalid one is recorded in the :class:`DatasetReport` with its reason and logged.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from fashion_search.catalog.models import ProductFields, value_type
from fashion_search.errors import DatasetError

log = logging.getLogger(__name__)

#: The dataset's columns: a product's fields by their wire names, then its image.
FIELD_COLUMNS = {field.alias or name: field for name, field in ProductFields.model_fields.items()}
DATASET_COLUMNS = [*FIELD_COLUMNS, "image"]
#: The source that names the catalog itself (what retraining on new products reads).
CATALOG_SOURCE = "catalog"


@dataclass(frozen=True)
class DatasetItem:
    """A valid dataset row: the product's fields and its image bytes."""

    fields: ProductFields
    image: bytes


@dataclass(frozen=True)
class RejectedRow:
    """A dataset row that was not loaded, and why."""

    index: int
    product_id: object
    reason: str


@dataclass
class DatasetReport:
    """What a read saw: rows read, rows accepted, rows rejected with reasons."""

    read: int = 0
    accepted: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)


def _rows_from_parquet(path: Path, batch_rows: int) -> Iterator[dict[str, Any]]:
    files = sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]
    if not files:
        raise DatasetError(f"no parquet files under {path}")
    for file in files:
        parquet = pq.ParquetFile(file)
        missing = set(DATASET_COLUMNS) - set(parquet.schema_arrow.names)
        if missing:
            raise DatasetError(f"{file} lacks the columns {sorted(missing)}")
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=DATASET_COLUMNS):
            yield from batch.to_pylist()


def _rows_from_hub(dataset_id: str) -> Iterator[dict[str, Any]]:
    import datasets  # imported lazily: heavy, and only needed with a hub id

    try:
        stream = datasets.load_dataset(dataset_id, split="train", streaming=True)
    except Exception as error:  # the hub client raises many unrelated types
        raise DatasetError(f"cannot open dataset {dataset_id!r}: {error}") from error
    yield from stream.cast_column("image", datasets.Image(decode=False))


def _image_bytes(value: Any) -> bytes:
    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, bytes) or not data:
        raise ValueError("image bytes are missing")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"image does not decode: {error}") from error
    return data


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _to_item(row: dict[str, Any]) -> DatasetItem:
    values = {name: _clean(row.get(name)) for name in FIELD_COLUMNS}
    for name, info in FIELD_COLUMNS.items():  # parquet has integers as floats (year: 2011.0)
        if values[name] is not None and value_type(info) is int:
            values[name] = int(values[name])
    try:
        fields = ProductFields.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(problems) from error
    return DatasetItem(fields=fields, image=_image_bytes(row.get("image")))


def count_rows(source: str) -> int | None:
    """Rows in a local parquet source (from its metadata); None for a hub id."""
    path = Path(source).expanduser()
    if not path.exists():
        return None
    files = sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]
    return sum(int(pq.ParquetFile(file).metadata.num_rows) for file in files)


def iter_dataset(
    source: str,
    *,
    offset: int = 0,
    limit: int | None = None,
    report: DatasetReport | None = None,
    batch_rows: int = 2048,
) -> Iterator[DatasetItem]:
    """Yield valid products of ``source`` (local path, hub id or ``catalog``), rows
    ``offset..offset+limit``.

    Invalid rows (missing id or title, duplicate id, image missing or not decodable) are
    skipped, recorded in ``report`` and logged as warnings.
    """
    if offset < 0 or (limit is not None and limit < 0):
        raise DatasetError("offset and limit must not be negative")
    report = report if report is not None else DatasetReport()
    path = Path(source).expanduser()
    if source == CATALOG_SOURCE:
        from fashion_search.catalog.snapshot import catalog_rows  # needs the catalog's settings
        from fashion_search.settings import get_settings

        rows = catalog_rows(get_settings())
    else:
        rows = _rows_from_parquet(path, batch_rows) if path.exists() else _rows_from_hub(source)
    end = None if limit is None else offset + limit
    seen: set[int] = set()
    for index, row in enumerate(islice(rows, offset, end), start=offset):
        report.read += 1
        try:
            item = _to_item(row)
            if item.fields.id in seen:
                raise ValueError(f"duplicate id {item.fields.id}")
        except ValueError as error:
            rejected = RejectedRow(index=index, product_id=row.get("id"), reason=str(error))
            report.rejected.append(rejected)
            log.warning("dataset row %d (id %s) rejected: %s", index, rejected.product_id, error)
            continue
        seen.add(item.fields.id)
        report.accepted += 1
        yield item
