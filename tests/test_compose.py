"""docker-compose.yml is valid for Docker Compose (validated by the compose CLI, no daemon),
holds no password, and gives each service its own role's credentials only (the secrets service
generates them into a volume per service). tests/test_compose_up.py runs it for real."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fashion_search.settings import REPO_ROOT, Settings
from stack.compose_cli import compose_command
from stack.s3 import MINIO_KAFKA_TARGETS
from stack.secrets import (
    COMPOSE_MOUNT,
    COMPOSE_SERVICES,
    VARIABLES,
    distribute,
    read_env_file,
)
from stack.secrets import ensure as write_compose_env

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    """``docker compose -f docker-compose.yml ARGS``."""
    return subprocess.run(
        [*compose_command(Settings()), "-f", str(COMPOSE_FILE), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The compose file as Docker Compose resolves it (no settings needed)."""
    result = _compose("--profile", "dashboards", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


def test_compose_file_is_valid_and_complete(config: dict[str, Any]) -> None:
    services = config["services"]
    expected = {"postgres", "kafka", "minio", "localstack", "mlflow", "setup", "catalog"}
    apps = {"model-init", "model-server", "dispatcher", "api", "ui", "airflow"}
    assert expected | apps <= set(services)
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["minio"]["image"].startswith("minio/minio:")
    assert services["localstack"]["image"].startswith("localstack/localstack:")
    # The project's services run the image of their role: a target of the one Dockerfile.
    built = {name: s["build"]["target"] for name, s in services.items() if "build" in s}
    assert {"setup", "mlflow", "catalog"} | apps <= set(built)
    assert built["api"] == "api" and built["dispatcher"] == "ingest"
    assert built["model-server"] == "serve" and built["ui"] == "ui"
    jobs = ("secrets", "setup", "mlflow", "catalog", "model-init", "embed", "airflow")
    assert {built[name] for name in jobs} == {"train"}
    for name, target in built.items():
        assert services[name]["image"] == f"fashion-search-{target}:latest", name
    assert "/app/dags" in services["airflow"]["volumes"][0]["target"]
    minio = services["minio"]
    # Both of the native stack's Kafka targets; events raised while Kafka is away wait on a
    # volume of their own.
    for target in MINIO_KAFKA_TARGETS:
        assert minio["environment"][f"MINIO_NOTIFY_KAFKA_TOPIC_{target}"] == "fashion.uploads"
        assert minio["environment"][f"MINIO_NOTIFY_KAFKA_SASL_{target}"] == "on"
        assert f"MINIO_NOTIFY_KAFKA_SASL_PASSWORD_{target}=" in minio["entrypoint"][-1]
    queue = minio["environment"]["MINIO_NOTIFY_KAFKA_QUEUE_DIR_QUEUED"]
    assert queue in {v["target"] for v in minio["volumes"] if v["type"] == "volume"}


def test_compose_rejects_a_broken_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api:\n    image: x\n    ports: 12\n")
    result = subprocess.run(
        [*compose_command(Settings()), "-f", str(broken), "config", "--quiet"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "ports" in result.stderr


#: Long-running services: restarted when they die. The others run once and exit.
LONG_RUNNING = {"postgres", "postgres-replica", "kafka", "minio", "localstack", "mlflow",
                "model-server", "dispatcher", "api", "ui", "airflow", "prometheus",
                "grafana"}  # fmt: skip
ONE_SHOT = {"secrets", "setup", "catalog", "model-init", "embed"}
#: The project's apps: each checked by the local stack's readiness check of the same name.
APPS = {"model-server", "dispatcher", "api", "ui"}


def _services() -> dict[str, dict[str, Any]]:
    """The services as written (YAML merge keys resolved), without the compose CLI."""
    config = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return dict(config["services"])


def test_long_running_services_restart_and_one_shots_do_not() -> None:
    services = _services()
    assert set(services) == LONG_RUNNING | ONE_SHOT  # a new service must be classified here
    for name in LONG_RUNNING:
        assert services[name].get("restart") == "unless-stopped", name
    for name in ONE_SHOT:  # restarting a one-shot that exited 0 would run it again forever
        assert services[name].get("restart", "no") == "no", name


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = _services()
    for name in LONG_RUNNING - {"localstack"}:  # localstack: the image's own HEALTHCHECK
        check = services[name].get("healthcheck")
        assert check and check["test"], name
        if name in APPS | {"mlflow", "airflow"}:
            assert {"interval", "timeout", "retries", "start_period"} <= set(check), name
    for name in APPS:  # with the service's secrets, as its entrypoint starts it
        test = services[name]["healthcheck"]["test"]
        check = ["python", "-m", "stack.apps", "check", name]
        assert test == ["CMD", "python", "-m", "stack.secrets", "exec", "--", *check], name


def test_the_healthchecks_name_apps_the_local_stack_knows() -> None:
    from stack.apps import apps

    # Airflow's three programs run in compose as one service (airflow standalone).
    assert {name for name in apps(Settings()) if not name.startswith("airflow-")} == APPS
    # Dependants wait for a healthy model server / API, not a merely started one.
    services = _services()
    for name in ("api", "dispatcher"):
        assert services[name]["depends_on"]["model-server"]["condition"] == "service_healthy"
    assert services["ui"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_the_secrets_file_is_written_once_with_random_distinct_values(tmp_path: Path) -> None:
    path = tmp_path / "state" / "compose.env"
    assert write_compose_env(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    values = read_env_file(path)
    assert set(values) == set(VARIABLES)
    assert len(set(values.values())) == len(values)  # distinct
    for name, value in values.items():
        assert len(value) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", value), name
    assert values["FS_SECRET_UI_API_KEY"].startswith("fsk_")  # an API key, as the CLI makes
    # Never overwritten: the volumes' data holds these passwords.
    assert not write_compose_env(path)
    assert path.read_text() == first
    other = tmp_path / "other.env"
    assert write_compose_env(other)
    assert not set(read_env_file(other).values()) & set(values.values())  # random


def _references(value: Any) -> Iterator[str]:
    """Every string of a YAML value (a mapping's keys excluded)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)
    elif value is not None:
        yield str(value)


_SECRET = re.compile(r"FS_SECRET_\w+")


def test_no_password_is_written_in_the_compose_file() -> None:
    """Each secret is a reference replaced in the container (``$${FS_SECRET_*}``) or a file of
    the service's secrets volume; nothing else looks like a password."""
    text = COMPOSE_FILE.read_text()
    assert set(_SECRET.findall(text)) <= set(VARIABLES)
    assert set().union(*COMPOSE_SERVICES.values()) == set(VARIABLES)  # each one is used
    for old in ("fashion-secret", "postgres:postgres", "POSTGRES_PASSWORD: postgres", ":?"):
        assert old not in text
    secret_name = re.compile(r"PASSWORD|SECRET|JAAS|^FS_API_KEY$")
    reference = re.compile(r"\$\$\{FS_SECRET_\w+\}")
    for service, spec in _services().items():
        for key, value in (spec.get("environment") or {}).items():
            if secret_name.search(key) and not key.endswith("_FILE"):  # a path is no secret
                assert reference.fullmatch(str(value)), (service, key)
            for url in re.findall(r"\w+://[^\s@/]+@", str(value)):  # user:password@host
                password = url.split("://", 1)[1].rsplit(":", 1)[-1]
                assert password.startswith("$${FS_SECRET_"), (service, key)
        for string in _references([spec.get("command"), spec.get("entrypoint")]):
            for password in re.findall(r"password=([^\]]+)", string):  # Kafka's SCRAM users
                assert password.startswith("$$(secret FS_SECRET_"), (service, string)


def _mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["source"]: v for v in service.get("volumes", []) if v["type"] == "volume"}


def test_each_service_gets_its_own_secrets_only(config: dict[str, Any]) -> None:
    """A service refers only to the secrets of its own volume, mounted read-only at
    COMPOSE_MOUNT, and starts after the secrets service; that one alone mounts them all."""
    services = config["services"]
    assert set(COMPOSE_SERVICES) <= set(services)
    for name, service in services.items():
        volumes = {s for s in _mounts(service) if s.startswith("secrets-")}
        if name == "secrets":
            assert volumes == {f"secrets-{s}" for s in [*COMPOSE_SERVICES, "all"]}
            continue
        parts = {k: service.get(k) for k in ("environment", "command", "entrypoint")}
        used = set(_SECRET.findall(" ".join(_references(parts))))
        own = set(COMPOSE_SERVICES.get(name, ()))
        assert used <= own, (name, used - own)
        assert volumes == ({f"secrets-{name}"} if own else set()), name
        if own:
            volume = _mounts(service)[f"secrets-{name}"]
            assert volume["target"] == str(COMPOSE_MOUNT) and volume.get("read_only"), name
    for name in COMPOSE_SERVICES:  # started after the secrets exist (directly or not)
        waits, seen = {name}, set()
        while waits - seen:
            current = (waits - seen).pop()
            seen.add(current)
            waits |= set(services[current].get("depends_on", {}))
        assert "secrets" in waits, name
    api = services["api"]["environment"]
    assert api["FS_API_SEARCH_ACCESS"] == "key"
    assert api["FS_DATABASE_URL"].startswith("postgresql://fashion_api:$${FS_SECRET_PG_API}@")
    assert api["FS_S3_ACCESS_KEY"] == "fashion-api"
    dispatcher = services["dispatcher"]["environment"]
    assert dispatcher["FS_DATABASE_URL"].startswith("postgresql://fashion_ingest:")
    assert dispatcher["FS_S3_ACCESS_KEY"] == dispatcher["FS_KAFKA_USERNAME"] == "fashion-ingest"
    assert services["ui"]["environment"]["FS_API_KEY"] == "$${FS_SECRET_UI_API_KEY}"
    # The setup service registers the UI's key and gives every role its password.
    setup = " ".join(services["setup"]["command"])
    assert "python -m stack.access apply" in setup
    assert "api-keys create --name ui --scope search --key-from-env FS_API_KEY" in setup
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD_FILE"] == f"{COMPOSE_MOUNT}/FS_SECRET_PG_OWNER"
    assert postgres["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert postgres["POSTGRES_INITDB_ARGS"] == "--auth=scram-sha-256"
    minio = services["minio"]["environment"]
    assert minio["MINIO_NOTIFY_KAFKA_SASL_PRIMARY"] == "on"
    assert minio["MINIO_NOTIFY_KAFKA_SASL_MECHANISM_PRIMARY"] == "sha256"


def test_the_secrets_service_gives_each_service_its_own(tmp_path: Path) -> None:
    distribute(tmp_path)
    everything = read_env_file(tmp_path / "all" / "secrets.env")
    assert set(everything) == set(VARIABLES)
    for service, names in COMPOSE_SERVICES.items():
        folder = tmp_path / service
        assert read_env_file(folder / "env") == {n: everything[n] for n in names}, service
        assert {p.name for p in folder.iterdir()} == {"env", *names}
        for name in names:
            assert (folder / name).read_text() == everything[name]
    distribute(tmp_path)  # again (every `docker compose up`): the same secrets
    assert read_env_file(tmp_path / "all" / "secrets.env") == everything


def _exec_in_fork(folder: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``exec_with_secrets`` in a child process: the printed FS_DATABASE_URL it ends up with."""
    code = (
        "import sys; from pathlib import Path; from stack.secrets import exec_with_secrets\n"
        "exec_with_secrets([sys.executable, '-c', "
        "'import os; print(os.environ[\"FS_DATABASE_URL\"])'], Path(sys.argv[1]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True,
        env={**os.environ, **environ}, cwd=REPO_ROOT, check=False,
    )  # fmt: skip


def test_a_container_starts_with_its_secrets_in_place(tmp_path: Path) -> None:
    """The images' entrypoint replaces each reference with the service's own secret, and
    refuses to start when a reference is not its own."""
    distribute(tmp_path)
    secret = read_env_file(tmp_path / "api" / "env")["FS_SECRET_PG_API"]
    url = "postgresql://fashion_api:${FS_SECRET_PG_API}@postgres:5432/fashion"
    result = _exec_in_fork(tmp_path / "api", {"FS_DATABASE_URL": url})
    assert result.stdout.strip() == url.replace("${FS_SECRET_PG_API}", secret), result.stderr
    owner = url.replace("PG_API", "PG_OWNER")  # not the api's
    result = _exec_in_fork(tmp_path / "api", {"FS_DATABASE_URL": owner})
    assert result.returncode != 0 and "FS_SECRET_PG_OWNER" in result.stderr
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert dockerfile.count('ENTRYPOINT ["python", "-m", "stack.secrets", "exec", "--"]') == 6


def test_kafka_clients_authenticate_with_scram() -> None:
    """Clients reach one listener, SASL_PLAINTEXT with SCRAM-SHA-256; the PLAINTEXT ones (the
    broker's own and the controller's) listen on the container's loopback only."""
    kafka = _services()["kafka"]["environment"]
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = dict(item.split("://") for item in kafka["KAFKA_LISTENERS"].split(","))
    for name, address in listeners.items():
        if protocols[name] != "SASL_PLAINTEXT":
            assert address.startswith("127.0.0.1:"), name
    advertised = dict(item.split("://") for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    [client] = [n for n, a in advertised.items() if not a.startswith("127.0.0.1:")]
    assert protocols[client] == "SASL_PLAINTEXT" and advertised[client] == "kafka:9092"
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-256"
    assert "java.security.auth.login.config" in kafka["KAFKA_OPTS"]


def test_airflow_needs_its_admin_login() -> None:
    """No "all admins": the simple auth manager with one user, admin, whose password comes
    from the secrets file; so a run that drops the catalog (recreate_prod_database, reset)
    needs that login."""
    airflow = _services()["airflow"]
    env = airflow["environment"]
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    users = [u.split(":") for u in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")]
    assert users == [["admin", "admin"]]
    assert env["FS_AIRFLOW_ADMIN_PASSWORD"] == "$${FS_SECRET_AIRFLOW_ADMIN}"
    passwords = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert passwords.startswith("/opt/airflow-home/")  # on its volume, writable
    script = airflow["command"][-1]
    assert "$$FS_AIRFLOW_ADMIN_PASSWORD" in script
    assert "$$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script
    assert 'export PATH="/opt/airflow-venv/bin:$$PATH"' in script
    assert script.rstrip().endswith("exec airflow standalone")


def test_prometheus_scrapes_every_app_with_metrics_and_the_dashboard_reads_only_theirs() -> None:
    from prometheus_client.registry import REGISTRY

    from fashion_search.telemetry.metrics import (
        CatalogCoverage,
        CatalogReplicas,
        ExperimentFigures,
    )
    from functions.api.app import create_app
    from stack.apps import METRICS_APPS

    services = _services()
    config = yaml.safe_load((REPO_ROOT / "observability/prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    ports = {str(services[name]["environment"]["FS_METRICS_PORT"]) for name in METRICS_APPS}
    [port] = ports  # one port in every container
    assert targets == {f"{name}:{port}" for name in METRICS_APPS}
    for name in METRICS_APPS:
        assert services[name]["environment"]["FS_METRICS_BIND"] == "0.0.0.0"
    mounts = " ".join(services["grafana"]["volumes"])
    assert "./observability/grafana/provisioning:/etc/grafana/provisioning" in mounts
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == (
        f"{COMPOSE_MOUNT}/FS_SECRET_GRAFANA_ADMIN"
    )

    from fastapi.testclient import TestClient

    TestClient(create_app()).get("/no-such-route")  # the API's request metrics, made at its start
    families = [
        *REGISTRY.collect(),
        *CatalogCoverage(list).collect(),
        *CatalogReplicas(list).collect(),
        *ExperimentFigures(lambda: None).collect(),
    ]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {
        family.name + suffix for family in families for suffix in suffixes.get(family.type, ("",))
    }
    dashboard = json.loads(
        (REPO_ROOT / "observability/grafana/dashboards/fashion-search.json").read_text()
    )
    read = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:fashion_search|http)_\w+", target["expr"])
    }
    assert read and read <= exported, read - exported
    assert any(n.startswith("fashion_search_ingest") for n in read)
    assert any(n.startswith("fashion_search_model") for n in read)
