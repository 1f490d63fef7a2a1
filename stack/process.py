"""A background server process tracked by a pid file, with its output in a log file."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from stack.supervisor import Backoff, supervised_argv


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def process_groups() -> dict[int, tuple[int, int]]:
    """pid -> (process group, session) of every live (not zombie) process, from /proc (none
    without it)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # gone meanwhile
            state, _, group, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
            if state != "Z":
                found[int(stat.parent.name)] = (int(group), int(session))
    return found


def _session_groups(sid: int) -> set[int]:
    """The process groups of session ``sid``'s live processes."""
    return {group for group, session in process_groups().values() if session == sid}


def _signal_session(sid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the leader's group and every other group of its session."""
    for group in {sid} | _session_groups(sid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)


class ManagedProcess:
    """One server: started detached in a session of its own, stopped with every process of that
    session (a process only leaves it by starting a session of its own)."""

    def __init__(self, name: str, run_dir: Path, log_dir: Path) -> None:
        self.name = name
        self.pid_file = run_dir / f"{name}.pid"
        self.log_file = log_dir / f"{name}.log"

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def pid(self) -> int | None:
        """The pid if the process is alive, else None (a stale pid file is removed)."""
        pid = self._recorded_pid()
        if pid is None:
            return None
        if _alive(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        supervise: Backoff | None = None,
    ) -> int:
        """Start ``argv`` detached, appending its output to the log; returns the pid. With
        ``supervise``, a :mod:`stack.supervisor` in the same group restarts it when it dies
        (the pid is the supervisor's; :meth:`stop` ends both)."""
        if supervise is not None:
            argv = supervised_argv(self.name, argv, supervise)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} start: {' '.join(argv)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def exited(self) -> bool:
        """Whether the process started last has exited (reaping it if it is our child)."""
        pid = self._recorded_pid()
        if pid is None:
            return True
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                self.pid_file.unlink(missing_ok=True)
                return True
        return self.pid() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> bool:
        """Signal every process group of the program's session, wait until none of its
        processes is left (those that outlive the leader, reparented, included), SIGKILL what
        remains after ``timeout_s``; returns whether it was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_session(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._ended(pid):
            time.sleep(0.1)
        while not self._ended(pid):
            _signal_session(pid, signal.SIGKILL)
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _ended(self, pid: int) -> bool:
        """Whether the leader ``pid`` has exited and no process of its session is left."""
        return self.exited() and not _session_groups(pid)

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``ready()`` until it is true (True), or the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.exited() or time.monotonic() > deadline:
                return False
            time.sleep(0.3)
        return True

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
