"""stack.supervisor: a dead app is restarted with a growing delay; a stop ends it for good."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from fashion_search.settings import Settings, StackSettings
from stack import apps
from stack.process import ManagedProcess
from stack.supervisor import Backoff, supervised_argv
from tests.helpers import until

T = TypeVar("T")

#: A child that appends its pid to the file named by argv[1], then runs until killed.
SLEEPER = "import os, sys, time; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(600)"
DELAY = re.compile(r"(\S+) exited with (-?\d+)(?: \(\w+\))?; restart in ([\d.]+) s")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False  # gone between the two checks


def _pids(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def _pid(path: Path, n: int = 0) -> int | None:
    """The pid of the ``n``th start, once it has happened."""
    pids = _pids(path)
    return pids[n] if len(pids) > n else None


def _until(what: Callable[[], T | None], timeout_s: float = 15.0) -> T:
    return until(what, timeout_s, interval_s=0.05)  # type: ignore[return-value]


def _restarts(log: Path) -> list[tuple[str, int, float]]:
    text = log.read_text() if log.exists() else ""
    return [(m[1], int(m[2]), float(m[3])) for m in DELAY.finditer(text)]


@pytest.fixture
def process(tmp_path: Path) -> ManagedProcess:
    return ManagedProcess("sleeper", tmp_path / "run", tmp_path / "logs")


def test_a_killed_child_is_restarted_and_a_stop_ends_both(
    process: ManagedProcess, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    supervisor = process.start(
        [sys.executable, "-c", SLEEPER, str(pids)], supervise=Backoff(0.2, 1.0, 60)
    )
    try:
        first = _until(lambda: _pid(pids))
        assert os.getpgid(first) == supervisor  # one group: ManagedProcess.stop reaches both
        os.kill(first, signal.SIGKILL)
        second = _until(lambda: _pid(pids, 1))
        assert second != first and _running(second) and not _running(first)
        assert process.pid() == supervisor
        assert _restarts(process.log_file) == [("sleeper", -9, 0.2)]
        assert "exited with -9 (SIGKILL); restart in 0.2 s" in process.log_file.read_text()
    finally:
        assert process.stop(timeout_s=10)
    assert not _running(supervisor) and not _running(second)
    time.sleep(1.0)  # five times the restart delay: a restart would have happened by now
    assert len(_pids(pids)) == 2
    assert process.pid() is None
    assert len(_restarts(process.log_file)) == 1
    assert "sleeper stopped" in process.log_file.read_text()


def test_a_child_that_exits_at_once_is_restarted_with_a_growing_delay(
    process: ManagedProcess,
) -> None:
    started = time.monotonic()
    process.start([sys.executable, "-c", "raise SystemExit(3)"], supervise=Backoff(0.2, 0.8, 60))
    try:
        _until(lambda: len(_restarts(process.log_file)) >= 4 or None)
        elapsed = time.monotonic() - started
    finally:
        process.stop(timeout_s=10)
    restarts = _restarts(process.log_file)
    assert [code for _, code, _ in restarts] == [3] * len(restarts)
    assert [delay for _, _, delay in restarts][:5] == [0.2, 0.4, 0.8, 0.8, 0.8][: len(restarts)]
    assert elapsed >= 0.2 + 0.4 + 0.8  # the delays before the fourth exit were waited, no hot loop
    assert len(restarts) <= 6  # within the time it took plus the stop


def test_the_delay_is_reset_after_a_long_enough_run(process: ManagedProcess) -> None:
    child = "import time; time.sleep(0.4); raise SystemExit(1)"
    process.start([sys.executable, "-c", child], supervise=Backoff(0.2, 5.0, 0.3))
    try:
        _until(lambda: len(_restarts(process.log_file)) >= 3 or None)
    finally:
        process.stop(timeout_s=10)
    assert {delay for _, _, delay in _restarts(process.log_file)} == {0.2}


def test_sigterm_to_the_supervisor_alone_is_forwarded(
    process: ManagedProcess, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    supervisor = process.start([sys.executable, "-c", SLEEPER, str(pids)], supervise=Backoff())
    child = _until(lambda: _pid(pids))
    os.kill(supervisor, signal.SIGTERM)  # not the group: the supervisor must pass it on
    _until(process.exited, timeout_s=10)
    assert not _running(child)
    assert _restarts(process.log_file) == []


def _detached_supervisor(tmp_path: Path, child: str, *options: str) -> subprocess.Popen[bytes]:
    argv = supervised_argv("t", [sys.executable, "-c", child, str(tmp_path / "pids")])
    argv[2:2] = list(options)  # before the "--" that ends the supervisor's own options
    return subprocess.Popen(argv, start_new_session=True, cwd=tmp_path)


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    stubborn = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + SLEEPER
    supervisor = _detached_supervisor(tmp_path, stubborn, "--stop-timeout", "0.5")
    child = _until(lambda: _pid(tmp_path / "pids"))
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(10) == 0
    _until(lambda: not _running(child), timeout_s=5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_does_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    supervisor = _detached_supervisor(tmp_path, SLEEPER)
    child = _until(lambda: _pid(tmp_path / "pids"))
    supervisor.kill()
    supervisor.wait(10)
    _until(lambda: not _running(child), timeout_s=5)


def test_the_apps_run_supervised(tmp_path: Path) -> None:
    settings = Settings(stack=StackSettings(state_dir=tmp_path, restart_delay_s=0.2))
    pids = tmp_path / "pids"
    app = apps.App("fake", ["-c", SLEEPER, str(pids)], lambda _: len(_pids(pids)) == 1)
    apps.start(settings, app, timeout_s=15)
    process = ManagedProcess("fake", tmp_path / "run", tmp_path / "logs")
    try:
        os.kill(_pids(pids)[0], signal.SIGKILL)
        _until(lambda: len(_pids(pids)) == 2 or None)
        assert _restarts(process.log_file) == [("fake", -9, 0.2)]
    finally:
        assert process.stop(timeout_s=10)
