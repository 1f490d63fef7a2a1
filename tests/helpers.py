"""Small helpers shared by the tests."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image

from fashion_search.model.preprocess import decode_image, resize_square
from fashion_search.settings import REPO_ROOT, Settings
from stack.process import ManagedProcess
from stack.process import free_port as free_port  # the tests take it from here

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from psycopg_pool import ConnectionPool

    from fashion_search.search.service import SearchService


T = TypeVar("T")


def until(
    condition: Callable[[], T], timeout_s: float, what: str = "a condition", interval_s: float = 0.1
) -> T:
    """Poll ``condition()`` every ``interval_s`` until it returns something true, and return
    that; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval_s)
    return value


def jpeg(width: int, height: int, colour: str = "navy") -> bytes:
    """A plain JPEG of the given size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "JPEG", quality=50)
    return buffer.getvalue()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine similarity of two ``[N, D]`` arrays."""
    return float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def squares(images: Sequence[bytes], size: int) -> np.ndarray:
    """uint8 ``[N, size, size, 3]`` as training sees the images."""
    return np.stack([np.asarray(resize_square(decode_image(b), size)) for b in images])


def database(settings: Settings, name: str) -> dict[str, str]:
    """Settings updates that point at database ``name`` on the same server."""
    from psycopg.conninfo import make_conninfo

    return {"name": name, "url": make_conninfo(settings.database.url, dbname=name)}


def scrape(port: int) -> dict[str, float]:
    """The samples of the Prometheus endpoint on ``port``, keyed ``name{label="value",...}``
    (labels sorted; no braces without labels)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment plus ``FS_*`` variables for ``settings``."""
    return {**os.environ, **settings.to_env()}


def start_process(
    name: str, argv: list[str], settings: Settings, run_dir: Path,
    ready: Callable[[], bool], timeout_s: float = 120,
) -> ManagedProcess:  # fmt: skip
    """Start ``python argv`` with the test settings; wait until ``ready()``."""
    process = ManagedProcess(name, run_dir, run_dir)
    process.start([sys.executable, *argv], child_env(settings), cwd=REPO_ROOT)
    if not process.wait_ready(ready, timeout_s):
        process.stop()
        raise AssertionError(f"{name} did not become ready:\n{process.log_tail()}")
    return process


def start_model_server(settings: Settings, run_dir: Path) -> ManagedProcess:
    """``python -m model_server`` serving the registry's champion, once healthy."""
    from fashion_search.embedding_client import EmbeddingClient

    with EmbeddingClient(settings.model_server.address, timeout_s=5) as client:
        return start_process(
            "model-server", ["-m", "model_server"], settings, run_dir, client.healthy
        )


def api_client(service: SearchService, search: str = "open", **access: object) -> TestClient:
    """The whole API in process on ``service``'s catalog, with its keys; search ``open`` or
    ``key``, rate limits out of the way unless ``access`` sets them."""
    from fastapi.testclient import TestClient

    from fashion_search.search.products import ProductService
    from functions.api.access import AccessControl, get_access
    from functions.api.app import create_app
    from functions.api.dependencies import get_products, get_service

    app = create_app()
    settings = service.settings.access.model_copy(
        update={"search": search, "rate_limit_per_address": "100000/minute",
                "rate_limit_per_key": "100000/minute", **access}
    )  # fmt: skip
    control = AccessControl.of(settings, lambda: service.catalog.api_keys)
    products = ProductService(service.catalog, service.image_url)
    app.dependency_overrides[get_service] = lambda: service
    app.dependency_overrides[get_products] = lambda: products
    app.dependency_overrides[get_access] = lambda: control
    return TestClient(app, raise_server_exceptions=False)


def catalog_digest(pool: ConnectionPool[Any]) -> str:
    """A digest of every row of the catalog (products and embeddings)."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT md5(coalesce(string_agg(p::text, '|' ORDER BY id), ''))"
            " || (SELECT md5(coalesce(string_agg(e::text, '|' ORDER BY model_version,"
            " product_id), '')) FROM product_embeddings e) FROM products p"
        ).fetchone()
    assert row is not None
    return str(row[0])
