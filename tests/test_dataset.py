"""The dataset reader on the shared parquet and on a parquet with bad rows."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fashion_search.dataset import DatasetReport, iter_dataset
from fashion_search.errors import DatasetError
from fashion_search.settings import Settings


def test_slices_of_the_shared_dataset(settings: Settings) -> None:
    first = list(iter_dataset(settings.dataset_source, limit=30))
    assert len(first) == 30
    assert first[0].fields.id == 15970
    assert first[0].fields.product_display_name == "Turtle Check Men Navy Blue Shirt"
    assert first[0].image[:2] == b"\xff\xd8"  # JPEG
    middle = list(iter_dataset(settings.dataset_source, offset=10, limit=5))
    assert [i.fields.id for i in middle] == [i.fields.id for i in first[10:15]]


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (60, 80), "navy").save(buffer, "JPEG")
    return buffer.getvalue()


def test_bad_rows_are_reported_not_dropped_silently(tmp_path: Path) -> None:
    good = _jpeg()
    rows = [
        (1, "Shirt A", good),
        (None, "No id", good),
        (3, "", good),
        (4, "Corrupt", b"\xff\xd8 not really a jpeg"),
        (5, "No image", None),
        (1, "Duplicate of 1", good),
        (7, "Shirt G", good),
    ]
    table = pa.table(
        {
            "id": [r[0] for r in rows],
            **{c: ["Men"] * len(rows) for c in ("gender", "masterCategory", "subCategory")},
            **{c: ["x"] * len(rows) for c in ("articleType", "baseColour", "season", "usage")},
            "year": [2012.0, None, float("nan"), 2012.0, 2012.0, 2012.0, 2012.0],
            "productDisplayName": [r[1] for r in rows],
            "image": [{"bytes": r[2], "path": f"{r[0]}.jpg"} for r in rows],
        }
    )
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    report = DatasetReport()
    items = list(iter_dataset(str(path), report=report))
    assert [i.fields.id for i in items] == [1, 7]
    assert items[0].fields.year == 2012
    assert report.read == 7
    assert report.accepted == 2
    reasons = {r.index: r.reason for r in report.rejected}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "id" in reasons[1]
    assert "productDisplayName" in reasons[2]
    assert "does not decode" in reasons[3]
    assert "missing" in reasons[4]
    assert "duplicate id 1" in reasons[5]


def test_unreadable_sources(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1]}), tmp_path / "other.parquet")
    with pytest.raises(DatasetError, match="lacks the columns"):
        list(iter_dataset(str(tmp_path / "other.parquet")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no parquet files"):
        list(iter_dataset(str(tmp_path / "empty")))
    with pytest.raises(DatasetError, match="cannot open dataset"):
        list(iter_dataset("no-such-user/no-such-dataset", limit=1))
