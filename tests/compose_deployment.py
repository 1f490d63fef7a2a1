"""The compose deployment the compose tests share (one ``up`` per session): the engine started
by the stack unless one runs (then stopped, the host as before), every image built here (or
pulled), the project up with ROWS products and the tiny model; ``down -v`` after, leaving no
container, network or volume.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fashion_search.settings import REPO_ROOT, Settings
from stack.compose_cli import COMPOSE_FILE, busy_ports, compose_command, deployment_secrets
from stack.compose_outputs import upload_messages
from stack.docker import DockerEngine, host_state
from stack.images import lambda_image_mapping
from stack.service import InstallUnavailableError, require_tool

PROJECT = "fs-compose-test"
API = "http://127.0.0.1:18000"
ROWS = 300
#: The services that run once and exit 0; every other one must be healthy (or running).
ONE_SHOT = {"secrets", "setup", "catalog", "model-init", "embed"}
#: The README's example searches (README.md, "Deploying").
EXAMPLES = (
    "/search/text?q=navy+blue+casual+shirt+for+men&k=5",
    "/search/text?q=silver+watch&articleType=Watches&gender=Women",
)


@dataclass
class Deployment:
    """The running compose project and what a user reads from it."""

    compose: list[str]
    secrets: dict[str, str]

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.secrets["FS_SECRET_UI_API_KEY"]}

    def run(self, *args: str, timeout_s: float = 600) -> str:
        """``docker compose ARGS``; its stdout (AssertionError with its output on failure)."""
        result = subprocess.run(
            [*self.compose, *args], capture_output=True, text=True, timeout=timeout_s,
            check=False, cwd=REPO_ROOT,
        )  # fmt: skip
        assert result.returncode == 0, f"compose {args}: {result.stdout}{result.stderr}"
        return result.stdout

    def messages(self, prefix: str, count: int, timeout_s: float = 180) -> list[dict[str, Any]]:
        """The upload path's messages about keys under ``prefix`` (:mod:`stack.compose_outputs`)."""
        return upload_messages(self.compose, prefix, count, timeout_s)


def _states(deployment: Deployment) -> dict[str, dict[str, Any]]:
    lines = deployment.run("ps", "-a", "--format", "json").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return {row["Service"]: row for row in rows}


def _wait_until_up(deployment: Deployment, timeout_s: float) -> None:
    """Every one-shot exited 0 and every other service healthy (or running, without a check)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = _states(deployment)
        failed = [
            name
            for name, row in states.items()
            if row["State"] == "exited" and (name not in ONE_SHOT or row["ExitCode"] != 0)
        ]
        if failed:
            logs = deployment.run("logs", "--no-color", "--tail", "60", *failed)
            raise AssertionError(f"{failed} failed:\n{logs}")
        waiting = [
            name
            for name, row in states.items()
            if not (
                (name in ONE_SHOT and row["State"] == "exited")
                or (row["State"] == "running" and row.get("Health") in ("healthy", ""))
            )
        ]
        if not waiting and states:
            return
        if time.monotonic() > deadline:
            logs = deployment.run("logs", "--no-color", "--tail", "40", *waiting)
            raise AssertionError(f"not up after {timeout_s:.0f} s: {waiting}\n{logs}")
        time.sleep(5)


_BUILT_IN_ACCEPT = re.compile(r"^:(INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) ACCEPT\b")


def _host() -> dict[str, Any]:
    """The host as dockerd changes it: its iptables rules, chains of its own and built-in
    chains whose policy it changed (a table that is loaded but empty, as the first start of an
    engine leaves it, is no change)."""
    state = host_state()
    lines = [re.sub(r"\[\d+:\d+\]", "", line).strip() for line in state["iptables"].splitlines()]
    state["iptables"] = [
        line for line in lines
        if line.startswith("-") or (line.startswith(":") and not _BUILT_IN_ACCEPT.match(line))
    ]  # fmt: skip
    return state


def _leftovers(docker: str) -> list[str]:
    """Containers, networks and volumes of the test's project."""
    found = []
    for kind in ("container", "network", "volume"):
        listing = subprocess.run(
            [docker, kind, "ls", *(["-a"] if kind == "container" else []), "-q",
             "--filter", f"label=com.docker.compose.project={PROJECT}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        found += [f"{kind} {name}" for name in listing]
    return found


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    """The engine (started unless one runs; then stopped, the host as before), the images, and
    the compose project up with ROWS products and the tiny model; ``down -v`` after."""
    settings = Settings()
    dataset = Path(settings.dataset_source)
    if not dataset.is_file():
        pytest.skip(f"needs the dataset as a local parquet file (FS_DATASET_SOURCE={dataset})")
    timings: dict[str, float] = {}
    engine = DockerEngine(settings)
    t0 = time.perf_counter()
    try:
        engine.install()
    except InstallUnavailableError as error:
        pytest.skip(f"no container engine: {error}")
    busy = busy_ports([*compose_command(settings), "-p", PROJECT, "-f", str(COMPOSE_FILE)])
    if busy:
        pytest.skip(f"ports the deployment publishes are in use (`make down`?): {busy}")
    host = _host()
    started_engine = engine.start()
    timings["engine"] = time.perf_counter() - t0
    try:
        yield from _deploy(settings, dataset, timings)
    finally:
        print("compose timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
        if started_engine:
            assert engine.stop()
            assert _host() == host


def _deploy(settings: Settings, dataset: Path, timings: dict[str, float]) -> Iterator[Deployment]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stack.images", "build"], check=True, cwd=REPO_ROOT)
    timings["images"] = time.perf_counter() - t0
    environ = {
        "FS_COMPOSE_DATASET_DIR": str(dataset.parent),
        "FS_COMPOSE_DATASET": f"/datasets/{dataset.name}",
        "FS_COMPOSE_LOAD_ARGS": f"--limit {ROWS}",
        "FS_COMPOSE_MODEL": "fashion-tiny",
        "FS_COMPOSE_TRAIN_ARGS": f"--epochs 1 --limit {ROWS}",
        "FS_COMPOSE_LAMBDA_IMAGES": lambda_image_mapping(settings),
    }
    os.environ.update(environ)
    compose = [*compose_command(settings), "-p", PROJECT, "-f", str(COMPOSE_FILE)]
    deployment = Deployment(compose, {})
    try:
        t0 = time.perf_counter()
        deployment.run("up", "-d", "--no-build", timeout_s=900)
        _wait_until_up(deployment, timeout_s=1500)
        timings["up"] = time.perf_counter() - t0
        deployment.secrets = deployment_secrets(compose)
        t0 = time.perf_counter()
        yield deployment
        timings["checks"] = time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        deployment.run("down", "-v", "--remove-orphans", timeout_s=300)
        timings["down"] = time.perf_counter() - t0
        for name in environ:
            os.environ.pop(name, None)
        assert not _leftovers(require_tool("docker"))
