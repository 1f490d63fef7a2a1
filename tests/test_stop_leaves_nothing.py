"""Stopping leaves nothing behind: :meth:`stack.process.ManagedProcess.stop` ends every process
of the program's session, those that ignore SIGTERM and outlive its leader included (Airflow's
scheduler and its ``airflow worker -- LocalExecutor`` processes), and after ``down`` no process
and no listening port of the stack remains."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from fashion_search.settings import Settings
from stack import airflow, apps, orchestrator
from stack.process import ManagedProcess, process_groups
from tests.helpers import (
    STACK_PORTS,
    free_port,
    leftovers,
    stack_sessions,
    until,
)

#: Ignores SIGTERM and runs until killed, as Airflow's LocalExecutor workers do.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
#: The scheduler's shape: a leader that dies on SIGTERM, with a worker in its group and a task
#: runner in a group of its own (same session) that ignore it and outlive it, reparented.
LEADER = f"""
import subprocess, sys, time
for group in (None, 0):
    subprocess.Popen([sys.executable, "-c", {STUBBORN!r}], process_group=group)
time.sleep(600)
"""


def _session(sid: int) -> list[int]:
    return [pid for pid, (_, session) in process_groups().items() if session == sid]


def test_stop_ends_the_processes_that_outlive_the_leader(tmp_path: Path) -> None:
    process = ManagedProcess("scheduler", tmp_path, tmp_path)
    leader = process.start([sys.executable, "-c", LEADER])
    try:
        until(lambda: len(_session(leader)) == 3, 15, "the leader and its two children")
        assert process.stop(timeout_s=1)
        assert _session(leader) == []
    finally:
        for pid in _session(leader):  # what a failed stop left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _workers(settings: Settings) -> dict[int, int]:
    """The scheduler's LocalExecutor workers: pid -> parent pid (1 once orphaned)."""
    scheduler = apps.app_process(settings, "airflow-scheduler").pid()
    assert scheduler is not None
    found = {}
    for pid in _session(scheduler):
        with contextlib.suppress(OSError):
            if b"LocalExecutor" in Path(f"/proc/{pid}/cmdline").read_bytes():
                stat = Path(f"/proc/{pid}/stat").read_text()
                found[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


@pytest.mark.stack
def test_down_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    """Airflow's API server and scheduler, the scheduler crashing once (its LocalExecutor
    workers, which ignore SIGTERM, outlive it) and restarted by its supervisor, then
    ``stack.apps down`` and ``stack down``: nothing of the stack runs or listens."""
    groups: dict[str, dict[str, object]] = {"stack": {"state_dir": tmp_path / "state"}}
    for name in (*STACK_PORTS, "stack.metrics_ports_from"):  # none the user's stack has
        group, field = name.split(".")
        groups.setdefault(group, {})[field] = free_port()
    settings = Settings().replace(**groups)
    programs = apps.apps(settings)
    try:
        airflow.prepare_server(settings, uuid.uuid4().hex)
        for name in ("airflow-api-server", "airflow-scheduler"):  # no DAGs: nothing scheduled
            apps.start(settings, programs[name])
        workers = 4  # AIRFLOW__CORE__PARALLELISM: the scheduler starts them all at once
        until(lambda: len(_workers(settings)) == workers, 60, "the workers", interval_s=0.5)
        os.kill(next(iter(_workers(settings).values())), signal.SIGKILL)  # the scheduler crashes
        # Its workers outlive it; the supervisor starts it again, with workers of its own.
        until(lambda: len(_workers(settings)) == 2 * workers, 60, "the restarted scheduler")
        sessions = stack_sessions(settings)
        assert sessions and leftovers(settings, sessions, repo=False)
    finally:
        apps.down(settings)
        orchestrator.down(settings)
    assert leftovers(settings, sessions, repo=False) == []
