"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image

from fashion_search.model.preprocess import decode_image, resize_square
from fashion_search.settings import REPO_ROOT, Settings
from stack.process import ManagedProcess, process_groups
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


#: The settings that name a TCP port of the stack on 127.0.0.1, as ``group.field``.
STACK_PORTS = (
    *(f"stack.{name}_port" for name in ("pg", "pg_replica", "s3", "s3_console", "kafka",
                                        "kafka_controller", "mlflow", "localstack", "airflow")),
    "model_server.port", "search.api_port", "search.ui_port",
)  # fmt: skip


def stack_ports(settings: Settings) -> dict[str, int]:
    """Every TCP port the stack of ``settings`` listens on, by setting (the apps' metrics as
    ``metrics[i]``)."""
    ports = {name: int(getattr(getattr(settings, name.split(".")[0]), name.split(".")[1]))
             for name in STACK_PORTS}  # fmt: skip
    ports.update({f"metrics[{i}]": settings.stack.metrics_ports_from + i for i in range(3)})
    return ports


def listening_ports() -> set[int]:
    """The TCP ports something listens on here (IPv4 and IPv6)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _mine() -> set[int]:
    """This process, its ancestors and every process of its session (the test's own)."""
    mine, pid = {os.getpid()}, os.getppid()
    with contextlib.suppress(OSError):
        while pid > 1:
            mine.add(pid)
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    session = os.getsid(0)
    return mine | {pid for pid, (_, sid) in process_groups().items() if sid == session}


def stack_sessions(settings: Settings) -> set[int]:
    """The sessions of the stack's programs (each leads one: the pids of its pid files)."""
    return {int(f.read_text()) for f in (settings.stack.state_dir / "run").glob("*.pid")}


def leftovers(settings: Settings, sessions: Iterable[int] = (), repo: bool = True) -> list[str]:
    """What of the stack of ``settings`` still runs: each process (but the test's own) of one of
    ``sessions`` (:func:`stack_sessions` before it stopped), or whose command line or working
    directory lies in its state directory (or, with ``repo``, in the repository), or whose
    environment names the state directory; and each of its ports that something listens on.
    (A process that retitles itself, as Airflow's do, may no longer show its environment.)"""
    state, sessions = str(settings.stack.state_dir), set(sessions)
    roots = (state, str(REPO_ROOT)) if repo else (state,)
    found, mine = [], _mine()
    for pid, (_, sid) in sorted(process_groups().items()):
        proc = Path(f"/proc/{pid}")
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = str((proc / "cwd").readlink())
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        ours = any(root in cmdline or f"{cwd}/".startswith(f"{root}/") for root in roots)
        if pid not in mine and (sid in sessions or ours or state in environ):
            found.append(f"process {pid} (session {sid}): {cmdline.strip()}")
    listening = listening_ports()
    found += [f"port {name} {port} listening" for name, port in stack_ports(settings).items()
              if port in listening]  # fmt: skip
    return found


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
