"""The API serves again within seconds of a dependency's return: PostgreSQL, the object store
and the model server each stopped, for longer than any backoff of their clients, while searches
run; the searches after the dependency is back answer 200 within RECOVERY_S."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest

from fashion_search.settings import Settings
from stack.faults import stopped
from stack.orchestrator import status
from stack.process import ManagedProcess, free_port
from stack.service import http_ok
from tests.helpers import start_model_server, start_process

#: How soon after a dependency is back every search must succeed again.
RECOVERY_S = 5.0
#: How long each dependency stays down: longer than psycopg_pool's backoff reaches in its first
#: minute (1, 2, 4, ... 32 s between attempts) and than gRPC's default reconnect backoff.
OUTAGE_S = 40.0


@pytest.fixture(scope="module")
def own_model_server(
    search_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Path]]:
    """The search catalog's settings with a model server port of the module's own (stopped and
    started by a test), and its run folder."""
    port = free_port()
    settings = search_settings.replace(model_server={"port": port, "address": f"127.0.0.1:{port}"})
    run_dir = tmp_path_factory.mktemp("recovery-model-server")
    process = start_model_server(settings, run_dir)
    yield settings, run_dir
    process.stop()


@pytest.fixture(scope="module")
def api(
    own_model_server: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``python -m functions`` on the search catalog and the module's model server: its URL."""
    port = free_port()
    settings = own_model_server[0].replace(
        search={"api_port": port, "api_url": f"http://127.0.0.1:{port}"},
        access={"rate_limit_per_address": "100000/minute"},
    )
    url = settings.search.api_url
    process = start_process(
        "api", ["-m", "functions"], settings, tmp_path_factory.mktemp("recovery-api"),
        lambda: http_ok(f"{url}/health"),
    )  # fmt: skip
    yield url
    process.stop()


class Searches:
    """Searches from two threads until stopped: (time answered, status) of each."""

    def __init__(self, request: Callable[[httpx.Client], httpx.Response]) -> None:
        self.answers: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._request = request
        self._threads = [threading.Thread(target=self._run) for _ in range(2)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    code = self._request(client).status_code
                except httpx.HTTPError:
                    code = 0
                self.answers.append((time.monotonic(), code))
                time.sleep(0.05)

    def __enter__(self) -> Searches:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _assert_recovers(
    outage: Callable[[], AbstractContextManager[None]],
    request: Callable[[httpx.Client], httpx.Response],
) -> None:
    """Searches fail during ``outage`` and all succeed from RECOVERY_S after it ends."""
    with Searches(request) as searches:
        time.sleep(1)
        with outage():
            time.sleep(OUTAGE_S)
        back = time.monotonic()
        time.sleep(RECOVERY_S + 3)
    during = [code for at, code in searches.answers if at < back]
    assert any(code == 503 for code in during), f"no search failed during the outage: {during}"
    after = [(round(at - back, 2), code) for at, code in searches.answers if at >= back]
    late = [(at, code) for at, code in after if at >= RECOVERY_S and code != 200]
    assert after and not late, f"searches still failing {RECOVERY_S} s after the return: {late}"
    first_ok = next(at for at, code in after if code == 200)
    assert first_ok < RECOVERY_S


def _text_search(url: str) -> Callable[[httpx.Client], httpx.Response]:
    return lambda client: client.get(f"{url}/search/text", params={"q": "red shirt", "k": 5})


def test_search_recovers_at_once_after_a_long_database_outage(
    api: str, stack_settings: Settings
) -> None:
    _assert_recovers(lambda: stopped(stack_settings, "postgres"), _text_search(api))


def test_search_recovers_at_once_after_a_long_model_server_outage(
    api: str, own_model_server: tuple[Settings, Path]
) -> None:
    settings, run_dir = own_model_server

    @contextmanager
    def model_server_down() -> Iterator[None]:
        assert ManagedProcess("model-server", run_dir, run_dir).stop()
        yield
        start_model_server(settings, run_dir)

    _assert_recovers(model_server_down, _text_search(api))


def test_image_search_recovers_at_once_after_a_long_object_store_outage(
    api: str, stack_settings: Settings
) -> None:
    if next(row for row in status(stack_settings) if row.role == "s3").fallback:
        pytest.skip("the object store's fallback cannot be stopped")
    hits = httpx.get(f"{api}/search/text", params={"q": "shirt", "k": 1}).json()["hits"]
    key = hits[0]["imageKey"]
    _assert_recovers(
        lambda: stopped(stack_settings, "s3"),
        lambda client: client.post(f"{api}/search/image", json={"key": key, "k": 5}),
    )
