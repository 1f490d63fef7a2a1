"""The project's own programs on top of the stack: model server, search API, UI, dispatcher,
and Airflow.

``python -m stack.apps up`` trains the offline default model when the registry has no champion
yet (about 8 minutes on 2 cores), starts the model server, embeds the catalog products that
lack an embedding from the served version, then starts the API, the UI, the bucket-event
dispatcher (uploads -> Kafka -> function; it relays feedback too) and Airflow (API server and
UI, scheduler, DAG processor: :mod:`stack.airflow`), and prints their URLs and Airflow's admin
password. Each runs under :mod:`stack.supervisor`, which restarts it when it dies
(``FS_STACK__RESTART_*`` backoff), with only its own role's credentials (:func:`app_environment`);
training, embedding and Airflow's tasks (admin jobs) run as the owner.
``python -m stack.apps down`` stops them for good; ``python -m stack.apps check NAME`` exits
0 when that app is ready (compose's healthchecks run it). Pid files and logs sit with the stack's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from fashion_search.settings import ENV_FILE_VARIABLE, REPO_ROOT, Settings, get_settings, variable
from stack import airflow
from stack.process import ManagedProcess
from stack.secrets import (
    AIRFLOW_ADMIN_PASSWORD,
    KAFKA_INGEST_USER,
    PG_API_ROLE,
    PG_INGEST_ROLE,
    S3_API_USER,
    S3_INGEST_USER,
    S3_MODEL_SERVER_USER,
    UI_API_KEY,
    Secrets,
    load_for,
)
from stack.service import http_ok
from stack.supervisor import Backoff


@dataclass(frozen=True)
class App:
    """A program, how to start it, how to tell it is ready, and its own credentials: its
    PostgreSQL role, MinIO user and Kafka user (None: it uses none of that part), and whether
    it sends the UI's API key."""

    name: str
    argv: list[str]
    ready: Callable[[Settings], bool]
    pg_role: str | None = None
    s3_user: str | None = None
    kafka_user: str | None = None
    api_key: bool = False
    # Airflow's programs: run by its own environment's executable, as the owner, with more
    # environment.
    executable: Callable[[Settings], str] | None = None
    owner: bool = False
    environment: Callable[[Settings], dict[str, str]] | None = None


#: The apps that serve Prometheus metrics, in the order of their ports
#: (``FS_STACK__METRICS_PORTS_FROM``).
METRICS_APPS = ("model-server", "api", "dispatcher")


def metrics_url(settings: Settings, name: str) -> str:
    """Where app ``name`` of the local stack serves its metrics."""
    port = settings.stack.metrics_ports_from + METRICS_APPS.index(name)
    return f"http://{settings.telemetry.metrics_bind}:{port}/metrics"


# The readiness checks import what they use: `check NAME` runs in each role's image (compose's
# healthchecks), which has only that role's dependencies.
def _model_server_ready(settings: Settings) -> bool:
    from fashion_search.embedding_client import EmbeddingClient

    with EmbeddingClient(settings.model_server.address, timeout_s=2) as client:
        return client.healthy()


def _dispatcher_ready(settings: Settings) -> bool:
    from stack.topics import group_has_member

    return group_has_member(settings, settings.ingest.group_id)


def _airflow_app(settings: Settings, command: str) -> App:
    component = command.replace("-", "_")  # as the health endpoint names it

    def ready(settings: Settings) -> bool:
        health = airflow.server_health(settings)
        return bool(health) and (command == "api-server" or health.get(component) == "healthy")

    return App(
        f"airflow-{command}", airflow.server_argv(settings, command), ready,
        executable=lambda s: str(airflow.airflow_executable(s)),
        owner=True, environment=airflow.server_environment,
    )  # fmt: skip


def apps(settings: Settings) -> dict[str, App]:
    """The programs, by name, in start order."""
    ui = ["-m", "streamlit", "run", "ui/app.py", "--server.port", str(settings.search.ui_port),
          "--server.address", settings.search.api_host, "--server.headless", "true",
          "--browser.gatherUsageStats", "false"]  # fmt: skip
    return {
        "model-server": App(
            "model-server", ["-m", "model_server"], _model_server_ready,
            s3_user=S3_MODEL_SERVER_USER,
        ),
        "api": App(
            "api", ["-m", "functions"], lambda s: http_ok(f"{s.search.api_url}/health"),
            pg_role=PG_API_ROLE, s3_user=S3_API_USER,
        ),
        "ui": App(
            "ui", ui,
            lambda s: http_ok(f"http://{s.search.api_host}:{s.search.ui_port}/_stcore/health"),
            api_key=True,
        ),
        "dispatcher": App(
            "dispatcher", ["-m", "functions.events", "kafka"],
            _dispatcher_ready,
            pg_role=PG_INGEST_ROLE, s3_user=S3_INGEST_USER, kafka_user=KAFKA_INGEST_USER,
        ),
        **{f"airflow-{c}": _airflow_app(settings, c) for c in airflow.SERVER_COMMANDS},
    }  # fmt: skip


def app_environment(settings: Settings, app: App) -> dict[str, str]:
    """The ``FS_*`` variables that give ``app`` its own credentials and no others: it reads no
    dotenv file (``FS_ENV_FILE=``, not the owner's settings file), so the parts it has no user
    of are left without credentials. An ``owner`` app gets the owner's (and its own
    ``environment``)."""
    extra = app.environment(settings) if app.environment else {}
    if app.owner:
        return extra
    pg_role, s3_user, kafka_user = app.pg_role, app.s3_user, app.kafka_user
    if settings.stack.kafka_is_plaintext():  # the fallback broker: no SASL, no users
        kafka_user = None
    needs = (pg_role, s3_user, kafka_user, app.api_key)
    secrets = load_for(settings) if any(needs) else Secrets({})
    env = {
        ENV_FILE_VARIABLE: "",
        variable("access.api_key"): secrets.values[UI_API_KEY] if app.api_key else "",
        variable("storage.access_key"): s3_user or "",
        variable("storage.secret_key"): secrets.s3_users[s3_user] if s3_user else "",
        variable("kafka.username"): kafka_user or "",
        variable("kafka.password"): secrets.kafka_users[kafka_user] if kafka_user else "",
    }
    if app.name in METRICS_APPS:
        env[variable("telemetry.metrics_port")] = str(
            settings.stack.metrics_ports_from + METRICS_APPS.index(app.name)
        )
    if pg_role:
        from psycopg.conninfo import make_conninfo

        env[variable("database.url")] = make_conninfo(
            settings.database.url, user=pg_role, password=secrets.pg_passwords[pg_role]
        )
    return {**env, **extra}


def app_process(settings: Settings, name: str) -> ManagedProcess:
    """The supervised app ``name`` (its pid file and log in the stack's state directory)."""
    return ManagedProcess(name, settings.stack.state_dir / "run", settings.stack.state_dir / "logs")


def backoff(settings: Settings) -> Backoff:
    """The supervisor's restart delays, from settings."""
    stack = settings.stack
    return Backoff(stack.restart_delay_s, stack.restart_max_delay_s, stack.restart_reset_after_s)


def start(settings: Settings, app: App, timeout_s: float = 300) -> None:
    """Start ``app`` (supervised) unless it runs; wait until it is ready."""
    process = app_process(settings, app.name)
    if process.pid() is None:
        process.start(
            [app.executable(settings) if app.executable else sys.executable, *app.argv],
            app_environment(settings, app),
            cwd=REPO_ROOT,
            supervise=backoff(settings),
        )
    if not process.wait_ready(lambda: app.ready(settings), timeout_s):
        raise SystemExit(f"{app.name} did not start:\n{process.log_tail()}")
    print(f"{app.name}: running (pid {process.pid()}, log {process.log_file})")


def _cli(*args: str, env: dict[str, str] | None = None, module: str = "fashion_search.cli") -> None:
    subprocess.run(
        [sys.executable, "-m", module, *args],
        check=True, cwd=REPO_ROOT, env={**os.environ, **(env or {})},
    )  # fmt: skip


def up(settings: Settings) -> None:
    """Model (trained if missing), model server, catalog embeddings, API, UI."""
    programs = apps(settings)
    # The offline default model when the registry has no champion (~25 min on 2 cores).
    _cli("train", "--unless-champion", module="model_server")
    start(settings, programs["model-server"])
    _cli("embed")
    # The UI's own key (search scope), registered once from the secrets file.
    ui_key = {UI_API_KEY: load_for(settings).values[UI_API_KEY]}
    _cli("api-keys", "create", "--name", "ui", "--key-from-env", UI_API_KEY, env=ui_key)
    start(settings, programs["api"])
    start(settings, programs["ui"])
    start(settings, programs["dispatcher"])
    password = load_for(settings).values[AIRFLOW_ADMIN_PASSWORD]
    start_airflow(settings, password)
    api = settings.search.api_url
    print(
        f"\nsearch API  {api}/docs   GraphQL {api}/graphql\n"
        f"UI          http://{settings.search.api_host}:{settings.search.ui_port}\n"
        f"try:        curl '{api}/search/text?q=navy+blue+casual+shirt+for+men&k=5'\n"
        f"            curl '{api}/search/text?q=silver+watch&articleType=Watches&gender=Women'\n"
        f"            curl -F image=@photo.jpg {api}/search/image\n"
        f"            http://{settings.search.api_host}:{settings.search.ui_port}/?q=red+dress\n"
        f"Airflow     {airflow.server_url(settings)}   user {airflow.ADMIN}, password {password}\n"
        f"metrics     {'  '.join(metrics_url(settings, name) for name in METRICS_APPS)}"
    )


def start_airflow(settings: Settings, password: str) -> None:
    """Airflow's API server (and UI), scheduler and DAG processor, with ``admin``'s password."""
    airflow.prepare_server(settings, password)
    programs = apps(settings)
    for command in airflow.SERVER_COMMANDS:
        start(settings, programs[f"airflow-{command}"])


def down(settings: Settings) -> None:
    """Stop the programs (UI first)."""
    for name in reversed(apps(settings)):
        if app_process(settings, name).stop():
            print(f"{name}: stopped")


def check(settings: Settings, name: str) -> bool:
    """Whether app ``name`` answers its readiness check (False while it is starting)."""
    return apps(settings)[name].ready(settings)


def main(argv: list[str] | None = None) -> int:
    """``python -m stack.apps up|down|check NAME``."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m stack.apps", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the apps (supervised) and wait until they are ready")
    commands.add_parser("down", help="stop them")
    p = commands.add_parser("check", help="exit 0 when the app is ready, 1 when not (yet)")
    p.add_argument("name", choices=list(apps(settings)))
    args = parser.parse_args(argv)
    if args.command == "check":
        return 0 if check(settings, args.name) else 1
    (up if args.command == "up" else down)(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
