"""The container engine: Debian's ``docker.io``, its ``dockerd`` started and stopped by the stack.

``python -m stack up docker`` installs the engine with apt when it is missing (as root), starts
``dockerd`` in the background (pid file, log, readiness on its socket) and ``down`` stops it by
its process group, then restores what it changed on the host: the iptables rules (saved before
the start), the bridges it created and ``net.ipv4.ip_forward``. An engine that already answers
on the socket (the user's own) is used as it is and never stopped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from stack.service import InstallUnavailableError, Service, StackError, require_tool, run_checked

SOCKET = Path("/var/run/docker.sock")
#: What the engine needs beside itself: iptables (its NAT), debootstrap (the base image).
PACKAGES = ("docker.io", "iptables", "debootstrap")
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _bridges() -> set[str]:
    """The host's bridge interfaces."""
    return {path.parent.name for path in Path("/sys/class/net").glob("*/bridge")}


def host_state() -> dict[str, Any]:
    """What dockerd changes on the host: the iptables rules, ``ip_forward`` and the bridges."""
    rules = subprocess.run(
        [require_tool("iptables-save")], capture_output=True, text=True, check=True
    ).stdout
    return {
        "iptables": rules,
        "ip_forward": _IP_FORWARD.read_text().strip(),
        "bridges": sorted(_bridges()),
    }


def engine_answers() -> bool:
    """Whether a Docker engine answers on the default socket."""
    docker = shutil.which("docker")
    if docker is None or not SOCKET.exists():
        return False
    result = subprocess.run(
        [docker, "version", "--format", "{{.Server.Version}}"],
        capture_output=True, timeout=10, check=False,
    )  # fmt: skip
    return result.returncode == 0


class DockerEngine(Service):
    """dockerd (with its containerd), images under /var/lib/docker (kept between runs)."""

    role = "docker"
    implementation = "Docker Engine (Debian docker.io, dockerd started by the stack)"
    ready_timeout_s = 60.0

    @property
    def port(self) -> int:
        return 0  # a unix socket, no TCP port

    @property
    def endpoint(self) -> str:
        return f"unix://{SOCKET}"

    @property
    def _host_state(self) -> Path:
        return self.data_dir / "host-before-start.json"

    def install(self) -> None:
        if shutil.which("dockerd") and shutil.which("iptables-save"):
            return
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise InstallUnavailableError("install Docker (docker.io) or run the stack as root")
        run_checked(["apt-get", "update", "-qq"], "apt-get update")
        run_checked(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
            "apt-get install docker.io",
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )

    def prepare(self) -> None:
        """Save what dockerd changes on the host, to restore it at ``stop``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._host_state.write_text(json.dumps(host_state()))

    def command(self) -> list[str]:
        return [require_tool("dockerd"), "--pidfile", str(self.data_dir / "dockerd.pid")]

    def ready(self) -> bool:
        return engine_answers()

    def start(self) -> bool:
        """Start dockerd unless an engine answers already (then it is used, not managed)."""
        if self.process.pid() is None and engine_answers():
            return False
        return super().start()

    def stop(self) -> bool:
        """Stop dockerd (its containers stop with it), then restore the host."""
        stopped = super().stop()
        if stopped and self._host_state.exists():
            self._restore_host(json.loads(self._host_state.read_text()))
            self._host_state.unlink()
        return stopped

    def _restore_host(self, state: dict[str, Any]) -> None:
        for bridge in _bridges() - set(state["bridges"]):
            subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
        rules = str(state["iptables"])
        iptables = require_tool("iptables")
        for table in {"filter", "nat"} - set(re.findall(r"^\*(\w+)", rules, flags=re.M)):
            # A table that did not exist before (restoring the rest leaves it): emptied.
            for change in ("-F", "-X"):
                subprocess.run([iptables, "-t", table, change], capture_output=True, check=False)
            if table == "filter":
                subprocess.run([iptables, "-P", "FORWARD", "ACCEPT"], check=False)
        restore = subprocess.run(
            [require_tool("iptables-restore")], input=rules, capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        if restore.returncode != 0:
            raise StackError(f"docker: iptables-restore failed: {restore.stderr}")
        _IP_FORWARD.write_text(f"{state['ip_forward']}\n")
