"""The local stack's generated secrets: one random password per role and user, written once.

``python -m stack up`` (or ``python -m stack.secrets [PATH]``) creates
``{FS_STACK__STATE_DIR}/secrets.env`` if it is missing: ``KEY=VALUE`` lines, mode 0600, each
value from
:func:`secrets.token_urlsafe` (32 characters of ``[A-Za-z0-9_-]``: safe in a URL, a JAAS or
``--add-scram`` option and JSON, within MinIO's 8-40). Nothing is ever regenerated: the
servers' data holds these passwords (``down --purge`` deletes both). Variables of the
environment with the same names win over the file (a compose container gets them so).

docker-compose.yml's ``secrets`` service makes the same file in a volume and gives each service
only its own (:func:`distribute`); the project's images start through :func:`exec_with_secrets`.

The owner's credentials (PostgreSQL superuser, MinIO root user, Kafka admin user) reach every
process as ordinary settings: ``python -m stack up`` writes them to
``{FS_STACK__STATE_DIR}/local.env`` (:func:`write_local_env`), the dotenv file the settings read
after the environment; :mod:`stack.access` gives every other role and user its password.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fashion_search.settings import (
    LOCAL_DATABASE_USER,
    LOCAL_HOST,
    Settings,
    StackSettings,
    variable,
)

#: The local stack's owners: PostgreSQL superuser, MinIO root user, Kafka admin user...
PG_SUPERUSER = LOCAL_DATABASE_USER
S3_ROOT_USER = "fashion-root"
KAFKA_ADMIN_USER = "fashion-admin"
#: ...and the variables of the secrets file with their passwords.
OWNER_SECRETS = {
    PG_SUPERUSER: "FS_SECRET_PG_OWNER",
    S3_ROOT_USER: "FS_SECRET_S3_ROOT",
    KAFKA_ADMIN_USER: "FS_SECRET_KAFKA_ADMIN",
}

# PostgreSQL roles (besides the superuser PG_SUPERUSER, the owner of every catalog table).
PG_API_ROLE = "fashion_api"
PG_INGEST_ROLE = "fashion_ingest"
PG_REPLICATION_ROLE = "fashion_replication"  # streaming replicas connect as it (REPLICATION)
# MinIO users (access key = user name), besides the root user S3_ROOT_USER (the owner).
S3_API_USER = "fashion-api"
S3_INGEST_USER = "fashion-ingest"
S3_MODEL_SERVER_USER = "fashion-model-server"
S3_MLFLOW_USER = "fashion-mlflow"
S3_UPLOADER_USER = "fashion-uploader"
# Kafka SCRAM-SHA-256 users, besides the admin KAFKA_ADMIN_USER (the owner).
KAFKA_MINIO_USER = "fashion-minio"
KAFKA_INGEST_USER = "fashion-ingest"

#: Each part's users -> the variable of the secrets file with the user's password (the same
#: names as docker-compose.yml's secrets file, stack/compose_cli.py).
PG_PASSWORDS = {
    PG_SUPERUSER: OWNER_SECRETS[PG_SUPERUSER],
    PG_API_ROLE: "FS_SECRET_PG_API",
    PG_INGEST_ROLE: "FS_SECRET_PG_INGEST",
    PG_REPLICATION_ROLE: "FS_SECRET_PG_REPLICATION",
}
S3_PASSWORDS = {
    S3_ROOT_USER: OWNER_SECRETS[S3_ROOT_USER],
    S3_API_USER: "FS_SECRET_S3_API",
    S3_INGEST_USER: "FS_SECRET_S3_INGEST",
    S3_MODEL_SERVER_USER: "FS_SECRET_S3_MODEL_SERVER",
    S3_MLFLOW_USER: "FS_SECRET_S3_MLFLOW",
    S3_UPLOADER_USER: "FS_SECRET_S3_UPLOADER",
}
KAFKA_PASSWORDS = {
    KAFKA_ADMIN_USER: OWNER_SECRETS[KAFKA_ADMIN_USER],
    KAFKA_MINIO_USER: "FS_SECRET_KAFKA_MINIO",
    KAFKA_INGEST_USER: "FS_SECRET_KAFKA_INGEST",
}
#: The Airflow webserver's admin, Grafana's admin (docker-compose.yml) and the UI's own search
#: API key.
AIRFLOW_ADMIN_PASSWORD = "FS_SECRET_AIRFLOW_ADMIN"
GRAFANA_ADMIN_PASSWORD = "FS_SECRET_GRAFANA_ADMIN"
UI_API_KEY = "FS_SECRET_UI_API_KEY"
#: The servers' users' passwords (what :mod:`stack.access` gives them)...
CREDENTIALS = (*PG_PASSWORDS.values(), *S3_PASSWORDS.values(), *KAFKA_PASSWORDS.values())
#: ...and every variable of the secrets file (the native stack's and docker-compose.yml's).
VARIABLES = (*CREDENTIALS, AIRFLOW_ADMIN_PASSWORD, GRAFANA_ADMIN_PASSWORD, UI_API_KEY)


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an env file (blank lines and ``#`` comments skipped); empty
    when the file is missing or unreadable."""
    try:
        return parse_env(path.read_text())
    except OSError:
        return {}


def parse_env(text: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an env file's text."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.strip().startswith("#")}


def secrets_file(stack: StackSettings) -> Path:
    """The generated secrets of the local stack (mode 0600, KEY=VALUE lines)."""
    return stack.state_dir / "secrets.env"


def _fresh(name: str) -> str:
    """A new value for ``name``: an API key for the UI's, else a random password."""
    if name == UI_API_KEY:
        from fashion_search.catalog.api_keys import new_key

        return new_key()
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Secrets:
    """The passwords of the secrets file (or of the environment), by part and user."""

    values: Mapping[str, str]

    def _of(self, variables: Mapping[str, str], owner: str) -> dict[str, str]:
        return {user: self.values[name] for user, name in variables.items() if user != owner}

    @property
    def pg_passwords(self) -> dict[str, str]:
        """Login role -> password, besides the superuser's."""
        return self._of(PG_PASSWORDS, PG_SUPERUSER)

    @property
    def s3_users(self) -> dict[str, str]:
        """MinIO user (access key) -> secret key, besides the root user."""
        return self._of(S3_PASSWORDS, S3_ROOT_USER)

    @property
    def kafka_users(self) -> dict[str, str]:
        """Kafka SCRAM user -> password, the admin included."""
        return self._of(KAFKA_PASSWORDS, "")

    def owner(self, user: str) -> str:
        """The password of owner ``user`` (PG_SUPERUSER, S3_ROOT_USER or KAFKA_ADMIN_USER)."""
        return self.values[OWNER_SECRETS[user]]


def ensure(path: Path) -> bool:
    """Create the secrets file at ``path`` unless it exists (mode 0600, in a 0700 directory
    when this creates it); add the variables it lacks. Returns whether anything was written."""
    existing = read_env_file(path)
    missing = [name for name in VARIABLES if not existing.get(name)]
    if not missing:
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = (
        []
        if existing
        else ["# Generated once by python -m stack.secrets (or stack up): never commit or edit."]
    )
    lines += [f"{name}={_fresh(name)}" for name in missing]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as file:
        file.write("".join(f"{line}\n" for line in lines))
    path.chmod(0o600)
    return True


def load(
    path: Path, environ: Mapping[str, str] | None = None, names: Sequence[str] = VARIABLES
) -> Secrets:
    """The secrets ``names``: each from the environment when set there, else from the file at
    ``path``; StackError names those found in neither."""
    from stack.service import StackError

    environ = os.environ if environ is None else environ
    found = read_env_file(path)
    values = {name: environ.get(name) or found.get(name, "") for name in names}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise StackError(
            f"secrets {missing} are in neither the environment nor {path}"
            " (python -m stack.secrets creates the file)"
        )
    return Secrets(values)


def load_for(settings: Settings) -> Secrets:
    """The secrets of the stack ``settings`` describe."""
    return load(secrets_file(settings.stack))


def owner_settings(settings: Settings, secrets: Secrets) -> dict[str, str]:
    """The variables that make a process the owner of the local stack ``settings`` describe:
    its database as the superuser, MinIO's root user, Kafka's admin (none on the fallback
    broker: it has no SASL)."""
    stack, password = settings.stack, quote(secrets.owner(PG_SUPERUSER), safe="")
    address = f"{LOCAL_HOST}:{stack.pg_port}/{settings.database.name}"
    env = {
        variable("database.url"): f"postgresql://{PG_SUPERUSER}:{password}@{address}",
        variable("storage.access_key"): S3_ROOT_USER,
        variable("storage.secret_key"): secrets.owner(S3_ROOT_USER),
    }
    if not stack.kafka_is_plaintext():
        env[variable("kafka.username")] = KAFKA_ADMIN_USER
        env[variable("kafka.password")] = secrets.owner(KAFKA_ADMIN_USER)
    return env


def write_local_env(settings: Settings) -> Path:
    """(Re)write the local stack's dotenv file of settings (mode 0600) with its owner's
    credentials (:func:`owner_settings`): what a process started in a plain shell reads after
    its environment. Returns its path."""
    path = settings.stack.local_env_file
    lines = ["# Written by python -m stack up: the local stack's owner. Never commit or edit."]
    lines += [f"{k}={v}" for k, v in owner_settings(settings, load_for(settings)).items()]
    partial = path.with_name(f".{path.name}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write("".join(f"{line}\n" for line in lines))
    partial.replace(path)
    return path


def prepare(settings: Settings) -> bool:
    """Create the secrets file of the stack ``settings`` describe if missing, and write its
    owner's settings (build the settings again to read them). Returns whether the secrets
    were generated."""
    generated = ensure(secrets_file(settings.stack))
    write_local_env(settings)
    return generated


#: docker-compose.yml: the secrets each service gets (every other service's are not its
#: business), each in a volume of its own (``secrets-<service>``) mounted at COMPOSE_MOUNT.
_OWNER = (OWNER_SECRETS[PG_SUPERUSER], OWNER_SECRETS[S3_ROOT_USER])
COMPOSE_SERVICES: dict[str, tuple[str, ...]] = {
    "postgres": (OWNER_SECRETS[PG_SUPERUSER],),
    "postgres-replica": (PG_PASSWORDS[PG_REPLICATION_ROLE],),
    "kafka": tuple(KAFKA_PASSWORDS.values()),
    "minio": (OWNER_SECRETS[S3_ROOT_USER], KAFKA_PASSWORDS[KAFKA_MINIO_USER]),
    "setup": (*CREDENTIALS, UI_API_KEY),  # gives each its password, registers the UI's key
    "mlflow": (S3_PASSWORDS[S3_MLFLOW_USER],),
    "catalog": _OWNER,  # admin jobs: they migrate the schema
    "model-init": _OWNER,
    "embed": _OWNER,
    "model-server": (S3_PASSWORDS[S3_MODEL_SERVER_USER],),
    "dispatcher": (PG_PASSWORDS[PG_INGEST_ROLE], S3_PASSWORDS[S3_INGEST_USER],
                   KAFKA_PASSWORDS[KAFKA_INGEST_USER]),
    "api": (PG_PASSWORDS[PG_API_ROLE], S3_PASSWORDS[S3_API_USER]),
    "ui": (UI_API_KEY,),
    "airflow": (*_OWNER, KAFKA_PASSWORDS[KAFKA_INGEST_USER], AIRFLOW_ADMIN_PASSWORD),
    "grafana": (GRAFANA_ADMIN_PASSWORD,),
}  # fmt: skip
COMPOSE_MOUNT = Path("/run/secrets/fashion-search")
_REFERENCE = re.compile(r"\$\{(FS_SECRET_\w+)\}")


def distribute(root: Path) -> None:
    """The compose ``secrets`` service: the secrets file ``root/all/secrets.env`` (created once),
    then each service's own in ``root/<service>``: a file per variable (for ``*_FILE`` settings
    and shell scripts) and ``env`` with them all (for :func:`exec_with_secrets`)."""
    ensure(root / "all" / "secrets.env")
    values = read_env_file(root / "all" / "secrets.env")
    for service, names in COMPOSE_SERVICES.items():
        folder = root / service
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_text(values[name])
        (folder / "env").write_text("".join(f"{name}={values[name]}\n" for name in names))
        for path in folder.iterdir():  # the service's own volume: its user (postgres, kafka...)
            path.chmod(0o444)


def resolve(environment: Mapping[str, str], secrets: Mapping[str, str]) -> dict[str, str]:
    """``environment`` with every ``${FS_SECRET_*}`` in a value replaced by ``secrets``; a
    ValueError names those missing."""
    resolved = {
        k: _REFERENCE.sub(lambda m: secrets.get(m[1], m[0]), v) for k, v in environment.items()
    }
    unresolved = sorted({m for v in resolved.values() for m in _REFERENCE.findall(v)})
    if unresolved:
        raise ValueError(f"secrets {unresolved} are not given")
    return resolved


def exec_with_secrets(argv: list[str], folder: Path = COMPOSE_MOUNT) -> None:
    """Replace this process with ``argv``, its environment given the service's secrets
    (``folder/env``, when mounted) and every ``${FS_SECRET_*}`` in a value replaced by them."""
    values = {**read_env_file(folder / "env"), **os.environ}
    try:
        environ = resolve(values, values)
    except ValueError as error:
        raise SystemExit(f"{error}: not in {folder / 'env'} nor the environment") from None
    os.execvpe(argv[0], argv, environ)


def main(argv: list[str] | None = None) -> int:
    """``python -m stack.secrets [PATH]``: create the secrets file if missing; print its path.
    ``compose ROOT`` and ``exec -- ARGV``: the compose side (:func:`distribute`,
    :func:`exec_with_secrets`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["exec"]:
        exec_with_secrets(args[2:] if args[1:2] == ["--"] else args[1:])
    if args[:1] == ["compose"]:
        distribute(Path(args[1]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m stack.secrets", description=__doc__)
    parser.add_argument(
        "path", nargs="?", type=Path, help="default: {FS_STACK__STATE_DIR}/secrets.env"
    )
    parsed = parser.parse_args(args)
    path = parsed.path or secrets_file(Settings().stack)
    ensure(path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
