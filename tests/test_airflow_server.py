"""Airflow as ``make up`` runs it: API server with the UI, scheduler and DAG processor from
:func:`stack.apps.start_airflow`; a login as admin, the project's DAGs parsed, a run triggered
through the API and watched to its end; and ``stack.apps.down`` (``make down``) leaving no
Airflow process behind."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from fashion_search.settings import Settings
from stack import airflow, apps
from tests.helpers import free_port, until


def _call(url: str, token: str | None = None, body: object = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _airflow_processes(home: Path) -> list[int]:
    """Processes whose environment has this Airflow home."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"AIRFLOW_HOME={home}".encode() in environ:
            found.append(int(entry.name))
    return found


def test_airflow_runs_with_its_ui_and_stops_with_the_stack(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = uuid.uuid4().hex[:6]
    mine = settings.replace(
        stack={"state_dir": tmp_path / "state", "airflow_port": free_port()},
        registry={"model_name": f"airflow-{run}"},  # no champion: the check retrains nothing
        storage={"uploads_bucket": f"test-{run}-no-uploads"},  # scheduled reconciliation idles
        retrain={"min_new_products": 10**9},
    )
    for name, value in mine.to_env().items():  # the programs' tasks use these settings
        monkeypatch.setenv(name, value)
    password = uuid.uuid4().hex
    url, home = airflow.server_url(mine), airflow.server_home(mine)
    try:
        apps.start_airflow(mine, password)
        assert airflow.server_health(mine) == {
            **airflow.server_health(mine), "metadatabase": "healthy", "scheduler": "healthy",
            "dag_processor": "healthy",
        }  # fmt: skip
        with urllib.request.urlopen(f"{url}/", timeout=10) as page:  # the UI
            assert page.status == 200 and b"<title>Airflow</title>" in page.read()
        assert _call(f"{url}/auth/token", body={"username": "admin", "password": "wrong"})[0] == 401
        status, login = _call(f"{url}/auth/token", body={"username": "admin", "password": password})
        assert status == 201, login
        token = login["access_token"]
        assert _call(f"{url}/api/v2/dags")[0] == 401  # nothing without a login

        def parsed() -> dict[str, Any] | None:
            dags = {d["dag_id"]: d for d in _call(f"{url}/api/v2/dags", token)[1]["dags"]}
            return dags if "retrain_on_new_data" in dags and len(dags) >= 5 else None

        dags = until(parsed, 120, "the DAGs to be parsed", interval_s=1)
        assert dags["retrain_on_new_data"]["timetable_summary"] == "Asset"
        assert not dags["retrain_on_new_data"]["is_paused"]
        dag_runs = f"{url}/api/v2/dags/retrain_on_new_data/dagRuns"
        status, triggered = _call(dag_runs, token, {"logical_date": None})
        assert status == 200, triggered
        run_url = f"{dag_runs}/{triggered['dag_run_id']}"

        def finished() -> str | None:
            state = str(_call(run_url, token)[1]["state"])
            return state if state in ("success", "failed") else None

        assert until(finished, 240, "the triggered run", interval_s=1) == "success"
        instances = _call(f"{run_url}/taskInstances", token)[1]["task_instances"]
        tasks = {t["task_id"]: t["state"] for t in instances}
        assert tasks["check_retraining"] == "success" and tasks["train_model"] == "skipped"
        assert _airflow_processes(home)
    finally:
        apps.down(mine)
    assert not _airflow_processes(home)
    assert not airflow.server_health(mine)
    assert (home / "airflow.db").exists()  # its runs are kept for the next start
