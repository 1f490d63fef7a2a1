"""The Docker Compose v2 CLI, to run and validate docker-compose.yml where docker lacks it.

Compose v2 cannot be ``go install``-ed (its go.mod has exclude directives), so its module
source is fetched through the Go module proxy and built as the main module, then installed
as a Docker CLI plugin (``~/.docker/cli-plugins/docker-compose``) and cached.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from fashion_search.settings import REPO_ROOT, Settings
from stack.secrets import parse_env
from stack.service import StackError, require_tool, run_checked

#: The whole system from images.
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

COMPOSE_MODULE = "github.com/docker/compose/v2"
COMPOSE_VERSION = "v2.40.3"


def _has_plugin(docker: str) -> bool:
    result = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    return result.returncode == 0


def build_compose(settings: Settings) -> Path:
    """Build (once, cached) the compose binary from its module source; returns its path."""
    binary = settings.cache_dir / f"compose-{COMPOSE_VERSION}" / "docker-compose"
    if binary.exists():
        return binary
    go = require_tool("go")
    download = subprocess.run(
        [go, "mod", "download", "-json", f"{COMPOSE_MODULE}@{COMPOSE_VERSION}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if download.returncode != 0:
        raise StackError(f"go mod download compose failed: {download.stdout}{download.stderr}")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "compose"
        shutil.copytree(json.loads(download.stdout)["Dir"], source)
        subprocess.run(["chmod", "-R", "u+w", str(source)], check=True)
        run_checked(
            [go, "build", "-trimpath", "-o", str(binary), "./cmd"],
            "go build compose",
            cwd=source,
            env={**os.environ, "CGO_ENABLED": "0"},
        )
    return binary


def compose_command(settings: Settings) -> list[str]:
    """argv prefix that runs Docker Compose: ``docker compose`` when the plugin exists."""
    docker = shutil.which("docker")
    if docker and _has_plugin(docker):
        return [docker, "compose"]
    binary = build_compose(settings)
    if docker:
        plugins = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        (plugins / "docker-compose").unlink(missing_ok=True)
        (plugins / "docker-compose").symlink_to(binary)
        return [docker, "compose"]
    return [str(binary)]


def deployment_secrets(compose: list[str]) -> dict[str, str]:
    """Every secret of the compose deployment ``compose`` (the argv prefix naming its project),
    as its one-shot ``secrets`` service keeps them."""
    result = run_checked(
        [*compose, "run", "--rm", "--no-deps", "secrets", "cat", "/secrets/all/secrets.env"],
        "read the deployment's secrets", cwd=REPO_ROOT,
    )  # fmt: skip
    return parse_env(result.stdout)


def compose_config(compose: list[str]) -> dict[str, Any]:
    """The project ``compose`` (the argv prefix naming it) as ``docker compose config`` reads
    it: variables interpolated, defaults filled in."""
    argv = [*compose, "config", "--format", "json"]
    config: dict[str, Any] = json.loads(run_checked(argv, "compose config", cwd=REPO_ROOT).stdout)
    return config


def busy_ports(compose: list[str]) -> list[int]:
    """The host ports the project ``compose`` publishes that something listens on already (the
    native stack publishes the same ones)."""
    config = compose_config(compose)
    ports = {
        int(port["published"])
        for service in config["services"].values()
        for port in service.get("ports", [])
    }
    busy = []
    for port in sorted(ports):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy
