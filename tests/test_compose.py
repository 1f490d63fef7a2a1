"""docker-compose.yml is valid for Docker Compose (validated by the compose CLI, no daemon),
holds no password, and gives each service its own role's credentials only."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fashion_search.settings import REPO_ROOT, Settings
from stack.compose_cli import compose_command
from stack.secrets import VARIABLES as COMPOSE_SECRETS
from stack.secrets import ensure as write_compose_env
from stack.secrets import read_env_file

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def _compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker compose --env-file ENV_FILE -f docker-compose.yml ARGS``, without any
    FS_SECRET_* of this environment."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FS_SECRET_")}
    return subprocess.run(
        [*compose_command(Settings()), "--env-file", str(env_file), "-f", str(COMPOSE_FILE),
         *args], capture_output=True, text=True, check=False, env=environ,
    )  # fmt: skip


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A secrets file as ``python -m stack.secrets`` writes it."""
    path = tmp_path_factory.mktemp("compose") / "compose.env"
    assert write_compose_env(path)
    return path


@pytest.fixture(scope="module")
def config(env_file: Path) -> dict[str, Any]:
    """The compose file as Docker Compose resolves it with that secrets file."""
    result = _compose(env_file, "config", "--format", "json")
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
    # The project's services share one image built from the one Dockerfile.
    built = {name for name, s in services.items() if "build" in s}
    assert {"setup", "mlflow", "catalog"} | apps <= built
    assert "/app/dags" in services["airflow"]["volumes"][0]["target"]
    assert {services[name]["image"] for name in built} == {"fashion-search:latest"}
    minio = services["minio"]
    assert minio["environment"]["MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY"] == "fashion.uploads"
    # Events raised while Kafka is away wait on a volume of their own.
    queue = minio["environment"]["MINIO_NOTIFY_KAFKA_QUEUE_DIR_PRIMARY"]
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
ONE_SHOT = {"setup", "catalog", "model-init"}
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
    for name in APPS:
        test = services[name]["healthcheck"]["test"]
        assert test == ["CMD", "python", "-m", "stack.apps", "check", name], name


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
    assert set(values) == set(COMPOSE_SECRETS)
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


def test_compose_fails_clearly_without_the_secrets_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _compose(empty, "config", "--quiet")
    assert result.returncode != 0
    assert "FS_SECRET_" in result.stderr
    assert "python -m stack.secrets" in result.stderr, result.stderr


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


def test_no_password_is_written_in_the_compose_file() -> None:
    """Each secret is a required variable of the secrets file (``${FS_SECRET_*:?...}``, so
    compose stops with a message without it); nothing else looks like a password."""
    text = COMPOSE_FILE.read_text()
    referenced = set(re.findall(r"\$\{(FS_SECRET_\w+)", text))
    assert referenced == set(COMPOSE_SECRETS)  # each generated one is used, none is missing
    for name in referenced:  # every reference requires it, with the way to make the file
        assert not re.search(rf"\$\{{{name}(?!:\?python -m stack\.secrets)", text), name
    for old in ("fashion-secret", "postgres:postgres", "POSTGRES_PASSWORD: postgres"):
        assert old not in text
    secret_name = re.compile(r"PASSWORD|SECRET|JAAS|^FS_API_KEY$")
    for service, spec in _services().items():
        for key, value in (spec.get("environment") or {}).items():
            if secret_name.search(key) and not key.endswith("_FILE"):  # a path is no secret
                assert re.fullmatch(r"\$\{FS_SECRET_\w+:\?[^}]+\}", str(value)), (service, key)
            for url in re.findall(r"\w+://[^\s@/]+@", str(value)):  # user:password@host
                password = url.split("://", 1)[1].rsplit(":", 1)[-1]
                assert password.startswith("${FS_SECRET_"), (service, key)
        for string in _references(spec.get("command")):  # the Kafka users' SCRAM passwords
            for password in re.findall(r"password=([^\],\s]+)", string):
                assert password.startswith("$$SCRAM_"), (service, string)


#: The secrets each service may see (every other service's role is not its business).
OWN_SECRETS: dict[str, set[str]] = {
    "postgres": {"FS_SECRET_PG_OWNER"},
    "postgres-replica": {"FS_SECRET_PG_REPLICATION"},
    "kafka": {"FS_SECRET_KAFKA_ADMIN", "FS_SECRET_KAFKA_MINIO", "FS_SECRET_KAFKA_INGEST"},
    "minio": {"FS_SECRET_S3_ROOT", "FS_SECRET_KAFKA_MINIO"},
    "localstack": set(),
    # gives each its password
    "setup": set(COMPOSE_SECRETS) - {"FS_SECRET_AIRFLOW_ADMIN", "FS_SECRET_GRAFANA_ADMIN"},
    "mlflow": {"FS_SECRET_S3_MLFLOW"},
    "catalog": {"FS_SECRET_PG_OWNER", "FS_SECRET_S3_ROOT"},  # migrates the schema
    "model-init": {"FS_SECRET_PG_OWNER", "FS_SECRET_S3_ROOT"},
    "model-server": {"FS_SECRET_S3_MODEL_SERVER"},
    "dispatcher": {"FS_SECRET_PG_INGEST", "FS_SECRET_S3_INGEST", "FS_SECRET_KAFKA_INGEST"},
    "api": {"FS_SECRET_PG_API", "FS_SECRET_S3_API"},
    "ui": {"FS_SECRET_UI_API_KEY"},
    "airflow": {"FS_SECRET_PG_OWNER", "FS_SECRET_S3_ROOT", "FS_SECRET_KAFKA_INGEST",
                "FS_SECRET_AIRFLOW_ADMIN"},
    "prometheus": set(),
    "grafana": {"FS_SECRET_GRAFANA_ADMIN"},
}  # fmt: skip


def test_each_service_gets_its_own_roles_secrets_only(
    config: dict[str, Any], env_file: Path
) -> None:
    secrets = read_env_file(env_file)
    services = config["services"]
    assert set(services) == set(OWN_SECRETS)
    for name, service in services.items():
        seen = " ".join(_references({k: service.get(k) for k in ("environment", "command")}))
        found = {secret for secret, value in secrets.items() if value in seen}
        assert found == OWN_SECRETS[name], name
    api = services["api"]["environment"]
    assert api["FS_API_SEARCH_ACCESS"] == "key"
    assert api["FS_DATABASE_URL"].startswith("postgresql://fashion_api:")
    assert api["FS_S3_ACCESS_KEY"] == "fashion-api"
    dispatcher = services["dispatcher"]["environment"]
    assert dispatcher["FS_DATABASE_URL"].startswith("postgresql://fashion_ingest:")
    assert dispatcher["FS_S3_ACCESS_KEY"] == dispatcher["FS_KAFKA_USERNAME"] == "fashion-ingest"
    assert services["ui"]["environment"]["FS_API_KEY"] == secrets["FS_SECRET_UI_API_KEY"]
    # The setup service registers the UI's key and gives every role its password.
    setup = " ".join(services["setup"]["command"])
    assert "python -m stack.access apply" in setup
    assert "api-keys create --name ui --scope search --key-from-env FS_API_KEY" in setup
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"] == secrets["FS_SECRET_PG_OWNER"]
    assert postgres["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert postgres["POSTGRES_INITDB_ARGS"] == "--auth=scram-sha-256"
    minio = services["minio"]["environment"]
    assert minio["MINIO_ROOT_PASSWORD"] == secrets["FS_SECRET_S3_ROOT"]
    assert minio["MINIO_NOTIFY_KAFKA_SASL_PRIMARY"] == "on"
    assert minio["MINIO_NOTIFY_KAFKA_SASL_MECHANISM_PRIMARY"] == "sha256"
    assert minio["MINIO_NOTIFY_KAFKA_SASL_PASSWORD_PRIMARY"] == secrets["FS_SECRET_KAFKA_MINIO"]


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
    assert env["FS_AIRFLOW_ADMIN_PASSWORD"].startswith("${FS_SECRET_AIRFLOW_ADMIN:?")
    passwords = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert passwords.startswith("/opt/airflow-home/")  # on its volume, writable
    script = airflow["command"][-1]
    assert "$$FS_AIRFLOW_ADMIN_PASSWORD" in script
    assert "$$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script
    assert script.rstrip().endswith("exec /opt/airflow-venv/bin/airflow standalone")


def test_prometheus_scrapes_every_app_with_metrics_and_the_dashboard_reads_only_theirs() -> None:
    from prometheus_client.registry import REGISTRY

    from fashion_search.telemetry.metrics import CatalogCoverage, CatalogReplicas
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
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "${FS_SECRET_GRAFANA_ADMIN:?"
    )

    from fastapi.testclient import TestClient

    TestClient(create_app()).get("/no-such-route")  # the API's request metrics, made at its start
    families = [
        *REGISTRY.collect(),
        *CatalogCoverage(list).collect(),
        *CatalogReplicas(list).collect(),
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
