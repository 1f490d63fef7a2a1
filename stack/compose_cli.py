"""docker-compose.yml's secrets file, and the Docker Compose CLI for validating
docker-compose.yml on machines without Docker's packages.

    python -m stack.compose_cli env      # once: .stack/compose.env, random secrets, mode 0600
    docker compose --env-file .stack/compose.env up -d

The compose file holds no password: each one is a ``${FS_SECRET_*:?...}`` variable of that
file, which is written once and never overwritten (the volumes' data holds its passwords).

Compose v2 cannot be ``go install``-ed (its go.mod has exclude directives), so its module
source is fetched through the Go module proxy and built as the main module, then installed
as a Docker CLI plugin (``~/.docker/cli-plugins/docker-compose``) and cached.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fashion_search.settings import REPO_ROOT, Settings
from stack.service import StackError, require_tool, run_checked

#: docker-compose.yml's secrets (``--env-file``); git-ignored, as the whole .stack/ is.
COMPOSE_ENV = REPO_ROOT / ".stack" / "compose.env"
#: Every variable of that file -> whose password (or key) it is.
COMPOSE_SECRETS: dict[str, str] = {
    "FS_SECRET_PG_OWNER": "PostgreSQL superuser postgres (owner)",
    "FS_SECRET_PG_API": "PostgreSQL role fashion_api (read only)",
    "FS_SECRET_PG_INGEST": "PostgreSQL role fashion_ingest",
    "FS_SECRET_S3_ROOT": "MinIO root user fashion-root (owner)",
    "FS_SECRET_S3_API": "MinIO user fashion-api",
    "FS_SECRET_S3_INGEST": "MinIO user fashion-ingest",
    "FS_SECRET_S3_MODEL_SERVER": "MinIO user fashion-model-server",
    "FS_SECRET_S3_MLFLOW": "MinIO user fashion-mlflow",
    "FS_SECRET_S3_UPLOADER": "MinIO user fashion-uploader",
    "FS_SECRET_KAFKA_ADMIN": "Kafka SCRAM user fashion-admin (owner)",
    "FS_SECRET_KAFKA_MINIO": "Kafka SCRAM user fashion-minio (MinIO's notifications)",
    "FS_SECRET_KAFKA_INGEST": "Kafka SCRAM user fashion-ingest",
    "FS_SECRET_AIRFLOW_ADMIN": "Airflow user admin",
    "FS_SECRET_UI_API_KEY": "the UI's search API key (registered by the setup service)",
}
#: The one variable that is an API key, not a password.
_API_KEY = "FS_SECRET_UI_API_KEY"

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


def _secret(name: str) -> str:
    """A fresh value for ``name``: an API key, or 128 random bits as 32 hex digits (safe in a
    URL, a JAAS or ``--add-scram`` option and JSON; within MinIO's 8-40 characters)."""
    if name == _API_KEY:
        from fashion_search.catalog.api_keys import new_key

        return new_key()
    return secrets.token_hex(16)


def write_compose_env(path: Path = COMPOSE_ENV) -> bool:
    """Create the secrets file of docker-compose.yml at ``path`` (mode 0600, in a 0700
    directory when this creates it) unless it exists; never touches an existing one. Returns
    whether it wrote the file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = [
        "# docker-compose.yml's secrets, written once by python -m stack.compose_cli env.",
        "# Never commit or edit: the volumes' data holds these passwords.",
        *(f"# {name}: {what}\n{name}={_secret(name)}" for name, what in COMPOSE_SECRETS.items()),
    ]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write("\n".join(lines) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m stack.compose_cli env [--path PATH]``."""
    parser = argparse.ArgumentParser(
        prog="python -m stack.compose_cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("env", help="write docker-compose.yml's secrets file once")
    p.add_argument("--path", type=Path, default=COMPOSE_ENV, help=f"default {COMPOSE_ENV}")
    args = parser.parse_args(argv)
    written = write_compose_env(args.path)
    print(f"{args.path}: {'written' if written else 'exists, kept'}")
    print(f"docker compose --env-file {args.path} up -d")
    return 0


if __name__ == "__main__":
    sys.exit(main())
