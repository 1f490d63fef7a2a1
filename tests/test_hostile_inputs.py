"""Inputs meant to exhaust the system, sent to the whole API in process over the real catalog
and the real model server process: a padding bomb (a blank 39,000 x 1,000 PNG of a few KB,
and 65,000 x 600), a decompression bomb, the GraphQL fan-out. Each is answered within seconds
(a 4xx, or for the padding bombs possibly a 200: they are images, shrunk before padding), the
model server's resident memory stays under twice its idle size, and the catalog is unchanged.
1 GB bodies are cut off at the limit in tests/test_api_limits.py; forged foreign-bucket events
and oversized uploads are dead-lettered in tests/test_ingest.py."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import psutil
import pytest
from PIL import Image

from fashion_search.search.service import SearchService
from fashion_search.settings import Settings
from tests.helpers import api_client, catalog_digest
from tests.test_api_limits import FANOUT


def blank_png(width: int, height: int) -> bytes:
    """A white bilevel PNG: a few KB however large it claims to be."""
    out = io.BytesIO()
    Image.new("1", (width, height), 1).save(out, format="PNG", optimize=True)
    return out.getvalue()


def declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (its data is one empty row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def model_server_process(settings: Settings) -> psutil.Process:
    port = int(settings.model_server.address.rsplit(":", 1)[1])
    [pid] = {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid
    }
    return psutil.Process(pid)


@pytest.mark.parametrize(
    ("name", "image", "allowed"),
    [
        ("padding bomb 39000x1000", blank_png(39_000, 1_000), {200, 413, 422}),
        ("padding bomb 65000x600", blank_png(65_000, 600), {200, 413, 422}),
        ("skinny 100000x1", blank_png(100_000, 1), {200, 413, 422}),
        ("decompression bomb 100000x100000", declared_png(100_000, 100_000), {413, 422}),
        ("decompression bomb 20000x20000", declared_png(20_000, 20_000), {413, 422}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_image_bombs_are_answered_in_seconds_without_exhausting_the_model_server(
    search_service: SearchService, search_settings: Settings, name: str, image: bytes,
    allowed: set[int],
) -> None:  # fmt: skip
    api = api_client(search_service)
    server = model_server_process(search_settings)
    product = search_service.catalog.products.list_products(limit=1).items[0]
    normal = search_service.store.get(search_settings.storage.images_bucket, product.image_key)
    assert api.post("/search/image", files={"image": ("n.jpg", normal)}).status_code == 200
    idle = server.memory_info().rss
    before = catalog_digest(search_service.catalog.pool)
    assert len(image) < 200_000  # small on the wire: the danger is what it decodes to

    for send in (
        {"files": {"image": ("bomb.png", image)}},
        {"json": {"imageBase64": base64.b64encode(image).decode()}},
    ):
        started = time.perf_counter()
        response = api.post("/search/image", **send)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        assert response.status_code in allowed, (name, response.status_code, response.text)
        assert elapsed < 10, (name, elapsed)
        if response.status_code != 200:
            assert response.json()["detail"]

    assert server.memory_info().rss < 2 * idle, (name, server.memory_info().rss, idle)
    assert catalog_digest(search_service.catalog.pool) == before
    assert api.post("/search/image", files={"image": ("n.jpg", normal)}).status_code == 200


def test_the_graphql_fan_out_is_refused_before_any_query(search_service: SearchService) -> None:
    api = api_client(search_service)
    before = catalog_digest(search_service.catalog.pool)
    started = time.perf_counter()
    response = api.post("/graphql", json={"query": FANOUT})
    assert time.perf_counter() - started < 2
    assert response.status_code == 400
    assert "query cost" in response.json()["errors"][0]["message"]
    assert catalog_digest(search_service.catalog.pool) == before
