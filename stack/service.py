"""What every local-stack component provides: install, prepare, command, readiness, setup."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from fashion_search.settings import Settings
from stack.process import ManagedProcess, port_in_use

ASSETS = Path(__file__).parent / "assets"


class StackError(RuntimeError):
    """A component could not be installed or started."""


class InstallUnavailableError(StackError):
    """This machine lacks what the component's install needs (a toolchain, a registry)."""


def run_checked(
    argv: Sequence[str], what: str, timeout_s: float = 900, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run an install/setup command; StackError with its output when it fails."""
    try:
        result: subprocess.CompletedProcess[str] = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
        )  # type: ignore[call-overload]
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StackError(f"{what} failed: {error}") from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-3000:]
        raise StackError(f"{what} failed (exit {result.returncode}):\n{output}")
    return result


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET (any HTTP status; raises only on connection errors)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a GET answers 200 (False when nothing answers)."""
    try:
        return http_get(url, timeout_s)[0] == 200
    except OSError:
        return False


def require_tool(name: str) -> str:
    """Path of an executable on PATH or in ``~/.local/bin`` (where scripts/bootstrap.sh puts uv),
    or InstallUnavailableError."""
    search = os.pathsep.join((os.environ.get("PATH", os.defpath), str(Path.home() / ".local/bin")))
    path = shutil.which(name, path=search)
    if path is None:
        raise InstallUnavailableError(f"'{name}' is not installed")
    return path


def python_venv(directory: Path, requirements: Sequence[str], what: str) -> Path:
    """A cached virtual environment with ``requirements``; returns its python."""
    python = directory / "bin" / "python"
    marker = directory / ".installed"
    if marker.exists() and marker.read_text() == "\n".join(requirements):
        return python
    uv = require_tool("uv")
    shutil.rmtree(directory, ignore_errors=True)
    run_checked([uv, "venv", "--quiet", "--python", "3.11", str(directory)], f"{what}: venv")
    run_checked(
        [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python),
         *requirements],
        f"{what}: pip install",
    )  # fmt: skip
    marker.write_text("\n".join(requirements))
    return python


def go_install(module: str, version: str, binary: Path) -> Path:
    """``binary``, built once (static) by ``go install MODULE@VERSION`` into its folder."""
    go = require_tool("go")
    if not binary.exists():
        run_checked(
            [go, "install", f"{module}@{version}"],
            f"go install {module}",
            env={**os.environ, "GOBIN": str(binary.parent), "CGO_ENABLED": "0"},
        )
    return binary


class Service(ABC):
    """One component of the local stack, in one of its implementations."""

    #: The part of the system it plays: postgres, kafka, s3, mlflow or localstack.
    role: ClassVar[str]
    #: Implementation name shown by ``status``.
    implementation: ClassVar[str]
    #: True for the pip-only stand-ins used when the native component cannot be had.
    is_fallback: ClassVar[bool] = False
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    ready_timeout_s: ClassVar[float] = 60.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess(
            self.role, settings.stack.state_dir / "run", settings.stack.state_dir / "logs"
        )

    @property
    @abstractmethod
    def port(self) -> int:
        """The TCP port it serves on 127.0.0.1."""

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """What clients connect to."""

    @property
    def data_dir(self) -> Path:
        """Where it keeps its data."""
        return self.settings.stack.state_dir / "data" / self.role

    def install(self) -> None:
        """Fetch and build what it needs into the cache (idempotent; nothing by default)."""

    def prepare(self) -> None:
        """One-time data setup before the first start (nothing by default)."""

    @abstractmethod
    def command(self) -> list[str]:
        """The server's argv."""

    def environment(self) -> dict[str, str]:
        """Extra environment variables of the server."""
        return {}

    def run_as(self) -> str | None:
        """OS user to run as (None: the current user)."""
        return None

    @abstractmethod
    def ready(self) -> bool:
        """Whether it answers real requests."""

    def after_start(self) -> None:
        """Create what the system needs in it (databases, buckets, topics); idempotent."""

    def start(self) -> bool:
        """Start unless running; wait until ready, then set up. Returns whether it started."""
        if self.process.pid() is not None:
            self.wait_ready()
            self.after_start()
            return False
        if port_in_use(self.port):
            raise StackError(
                f"{self.role}: port {self.port} is in use by a process this stack did not start;"
                f" stop it or choose another port (FS_STACK__*_PORT)"
            )
        self.prepare()
        self.process.start(self.command(), self.environment(), user=self.run_as())
        self.wait_ready()
        self.after_start()
        return True

    def wait_ready(self, watch_process: bool = True) -> None:
        """Block until ready; StackError with the log tail if it dies or times out."""
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if watch_process and self.process.exited():
                raise StackError(f"{self.role} exited during start:\n{self.process.log_tail()}")
            try:
                if self.ready():
                    return
            except StackError:
                raise
            except Exception:  # not ready yet: any client error means "retry"
                pass
            time.sleep(0.25)
        raise StackError(
            f"{self.role} not ready after {self.ready_timeout_s:.0f} s:\n{self.process.log_tail()}"
        )

    def stop(self) -> bool:
        """Stop it; returns whether it was running."""
        return self.process.stop(self.stop_signal)
