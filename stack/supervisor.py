"""Keep one program running: restart it when it dies, with a bounded exponential backoff.

    python -m stack.supervisor --name api -- python -m functions

The child runs in the supervisor's process group with its output (the app's log); each restart
is logged as ``<name> exited with N; restart in X s``. SIGTERM or SIGINT is forwarded to the
child and ends the supervisor once the child has exited (SIGKILL after ``--stop-timeout``), so
signalling the group (:meth:`stack.process.ManagedProcess.stop`) stops both for good. Only the
standard library is imported: the file also runs by path, from any directory.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

_PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except (OSError, TypeError):  # no C library to load by name here
    _LIBC = None


@dataclass(frozen=True)
class Backoff:
    """Delays between restarts: ``first_s`` doubling up to ``max_s``, back to ``first_s``
    after a run of at least ``reset_after_s``."""

    first_s: float = 1.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def next(self, delay_s: float) -> float:
        """The delay after ``delay_s``."""
        return min(delay_s * 2, self.max_s)


def supervised_argv(name: str, argv: Sequence[str], backoff: Backoff = Backoff()) -> list[str]:
    """The command line that runs ``argv`` under the supervisor (by path: no cwd needed)."""
    return [
        sys.executable, str(Path(__file__).resolve()), "--name", name,
        "--first-delay", f"{backoff.first_s:g}", "--max-delay", f"{backoff.max_s:g}",
        "--reset-after", f"{backoff.reset_after_s:g}", "--", *argv,
    ]  # fmt: skip


def _die_with_parent() -> None:
    """In the child (Linux): SIGTERM when the supervisor dies, so no orphan keeps the port."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):  # no prctl: not Linux
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _describe(code: int) -> str:
    """``N``, with the signal's name when the child was killed by one."""
    if code >= 0:
        return str(code)
    try:
        return f"{code} ({signal.Signals(-code).name})"
    except ValueError:
        return str(code)


class Supervisor:
    """Runs ``argv`` again each time it exits, until asked to stop."""

    def __init__(
        self, name: str, argv: Sequence[str], backoff: Backoff, stop_timeout_s: float = 20.0
    ) -> None:
        self.name, self.argv, self.backoff = name, list(argv), backoff
        self.stop_timeout_s = stop_timeout_s
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False  # a flag, not an Event: set from the signal handler

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        self.stopping = True
        if self.child is not None:
            self.child.send_signal(sig)  # a no-op once the child has been reaped

    def _log(self, message: str) -> None:
        print(f"{time.strftime('%F %T')} supervisor: {message}", flush=True)

    def _wait_stopped(self, child: subprocess.Popen[bytes]) -> None:
        try:
            child.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self._log(f"{self.name} ignored the stop signal for {self.stop_timeout_s:g} s: SIGKILL")
            child.kill()
            child.wait()

    def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when asked to stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))

    def _run_once(self) -> str | None:
        """Start the child and wait for it: how it ended, or None when asked to stop."""
        try:
            self.child = child = subprocess.Popen(self.argv, preexec_fn=_die_with_parent)
        except OSError as error:
            return f"could not start ({error})"
        if self.stopping:  # asked to stop while it was starting
            child.terminate()
        while child.poll() is None and not self.stopping:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(0.5)
        if self.stopping:
            self._wait_stopped(child)
            return None
        return f"exited with {_describe(child.returncode)}"

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; 0 once the child has stopped."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        delay = self.backoff.first_s
        while not self.stopping:
            started = time.monotonic()
            ended = self._run_once()
            if ended is None:
                break
            if time.monotonic() - started >= self.backoff.reset_after_s:
                delay = self.backoff.first_s
            self._log(f"{self.name} {ended}; restart in {delay:g} s")
            self._sleep(delay)
            delay = self.backoff.next(delay)
        self._log(f"{self.name} stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m stack.supervisor [--name N] [backoff options] -- PROGRAM [ARGS...]``."""
    parser = argparse.ArgumentParser(prog="python -m stack.supervisor", description=__doc__)
    parser.add_argument("--name", default="program", help="in the log lines")
    parser.add_argument("--first-delay", type=float, default=Backoff.first_s, metavar="S")
    parser.add_argument("--max-delay", type=float, default=Backoff.max_s, metavar="S")
    parser.add_argument("--reset-after", type=float, default=Backoff.reset_after_s, metavar="S")
    parser.add_argument("--stop-timeout", type=float, default=20.0, metavar="S")
    parser.add_argument("program", nargs="+", help="the command line to keep running")
    args = parser.parse_args(argv)
    backoff = Backoff(args.first_delay, args.max_delay, args.reset_after)
    return Supervisor(args.name, args.program, backoff, args.stop_timeout).run()


if __name__ == "__main__":
    sys.exit(main())
