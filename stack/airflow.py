"""Apache Airflow 3 in its own virtual environment (its pinned dependencies and the project's
do not fit in one): the server ``make up`` runs (scheduler, DAG processor, API server with the
UI on ``FS_STACK__AIRFLOW_PORT``, the simple auth manager's one user ``admin`` with the password
of the secrets file), and ``dag.test()`` runs of the project's DAGs against the local stack:

    python -m stack.airflow test recreate_prod_database --conf '{"limit": 2000}'

Each has its own home and SQLite metadata database under ``$FS_STACK__STATE_DIR``
(``airflow-server``, ``airflow``), so a test run never meets the scheduler. Tasks run in the
project's Python (``@task.external_python``), with the ``FS_*`` settings of this environment
(and the local stack's dotenv file): the owner's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fashion_search.settings import REPO_ROOT, Settings, get_settings
from stack.service import ASSETS, http_get, python_venv, run_checked

REQUIREMENTS = ASSETS / "airflow-requirements.txt"  # uv pip compile of apache-airflow==3.3.2
DAGS = REPO_ROOT / "dags"
_RUN_DAG = """
import json, runpy, sys
sys.path.insert(0, sys.argv[1])
dag = runpy.run_path(f"{sys.argv[1]}/{sys.argv[2]}.py")["dag"]
run = dag.test(run_conf=json.loads(sys.argv[3]), mark_success_pattern=sys.argv[4] or None)
print("DAG_RUN_STATE", run.state)
"""


def airflow_python(settings: Settings) -> Path:
    """Python of the Airflow environment, installed from the locked requirements if missing."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    venv = settings.cache_dir / f"airflow-{digest}"
    return python_venv(venv, ("-r", str(REQUIREMENTS)), "airflow")


def airflow_environment(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Airflow commands: its home, the DAGs folder, no examples."""
    return {
        **(base if base is not None else os.environ),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "FS_PROJECT_PYTHON": sys.executable,
    }


#: The server's programs, in start order: ``airflow <command>``.
SERVER_COMMANDS = ("api-server", "scheduler", "dag-processor")
ADMIN = "admin"


def server_home(settings: Settings) -> Path:
    """The Airflow server's home (its configuration, SQLite database, logs)."""
    return settings.stack.state_dir / "airflow-server"


def server_url(settings: Settings) -> str:
    """The API server and UI as this machine reaches it."""
    return f"http://127.0.0.1:{settings.stack.airflow_port}"


def server_environment(settings: Settings) -> dict[str, str]:
    """What the server's programs add to the environment: its home, the API server's address
    (the scheduler's tasks report to its execution API), one user, DAGs that run on their
    schedules once parsed (reconcile_uploads, retrain_on_new_data), few workers for a small
    machine."""
    home, url = server_home(settings), server_url(settings)
    return {
        **airflow_environment(home, {}),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
    }


def airflow_executable(settings: Settings) -> Path:
    """The ``airflow`` command of Airflow's environment."""
    return airflow_python(settings).parent / "airflow"


def prepare_server(settings: Settings, password: str) -> None:
    """Install Airflow if missing, migrate the server's database and write the admin's password
    (mode 0600)."""
    home = server_home(settings)
    LocalAirflow(settings, home)  # installs and migrates
    passwords = home / "passwords.json"
    passwords.touch(mode=0o600, exist_ok=True)
    passwords.write_text(json.dumps({ADMIN: password}))


def server_argv(settings: Settings, command: str) -> list[str]:
    """``airflow <command>`` with its options (the API server's host and port)."""
    if command == "api-server":
        return ["api-server", "--host", "127.0.0.1", "--port", str(settings.stack.airflow_port)]
    return [command]


def server_health(settings: Settings) -> dict[str, str]:
    """Component -> status (``healthy``...) from the API server's health endpoint; empty when
    it does not answer."""
    try:
        status, body = http_get(f"{server_url(settings)}/api/v2/monitor/health", 2.0)
    except OSError:
        return {}
    if status != 200:
        return {}
    parts: dict[str, dict[str, str]] = json.loads(body)
    return {name: str(part.get("status")) for name, part in parts.items()}


@dataclass(frozen=True)
class DagRunResult:
    """State of a ``dag.test()`` run and its log."""

    state: str
    log: str


class LocalAirflow:
    """An Airflow home with a migrated metadata database."""

    def __init__(self, settings: Settings, home: Path) -> None:
        self.python = airflow_python(settings)
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        run_checked(
            [str(airflow_executable(settings)), "db", "migrate"],
            "airflow db migrate",
            env=airflow_environment(home),
        )

    def test_dag(
        self,
        dag_id: str,
        conf: Mapping[str, object],
        env: Mapping[str, str] | None = None,
        mark_success: str = "",
    ) -> DagRunResult:
        """Run ``dag_id`` once with ``dag.test(run_conf=conf)``; tasks get ``env``. Tasks whose
        id matches the regex ``mark_success`` count as done without running (as when only the
        failed tasks of a run are cleared and run again)."""
        result = subprocess.run(
            [str(self.python), "-c", _RUN_DAG, str(DAGS), dag_id, json.dumps(conf), mark_success],
            env=airflow_environment(self.home, env), capture_output=True, text=True,
        )  # fmt: skip
        log = result.stdout + result.stderr
        states = [line.split()[-1] for line in log.splitlines() if line.startswith("DAG_RUN_STATE")]
        return DagRunResult(states[-1] if states else f"crashed (exit {result.returncode})", log)


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``python -m stack.airflow test DAG_ID [--conf JSON]``."""
    parser = argparse.ArgumentParser(prog="python -m stack.airflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("test", help="run a DAG once with dag.test()")
    p.add_argument("dag_id", choices=sorted(path.stem for path in DAGS.glob("[a-z]*.py")))
    p.add_argument("--conf", default="{}", help="run conf as JSON")
    p.add_argument("--mark-success", default="", help="regex of task ids to count as done")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m stack.airflow test DAG_ID [--conf JSON]``."""
    args = build_parser().parse_args(argv)
    settings = get_settings()
    result = LocalAirflow(settings, settings.stack.state_dir / "airflow").test_dag(
        args.dag_id, json.loads(args.conf), mark_success=args.mark_success
    )
    print(result.log)
    print(f"{args.dag_id}: {result.state}")
    return 0 if result.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
