"""docker-compose.yml is valid for Docker Compose (validated by the compose CLI, no daemon)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml

from fashion_search.settings import REPO_ROOT, Settings
from stack.compose_cli import compose_command


def test_compose_file_is_valid_and_complete() -> None:
    command = [*compose_command(Settings()), "-f", str(REPO_ROOT / "docker-compose.yml")]
    result = subprocess.run(
        [*command, "config", "--format", "json"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
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
LONG_RUNNING = {"postgres", "kafka", "minio", "localstack", "mlflow", "model-server", "dispatcher",
                "api", "ui", "airflow"}  # fmt: skip
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

    assert set(apps(Settings())) == APPS
    # Dependants wait for a healthy model server / API, not a merely started one.
    services = _services()
    for name in ("api", "dispatcher"):
        assert services[name]["depends_on"]["model-server"]["condition"] == "service_healthy"
    assert services["ui"]["depends_on"]["api"]["condition"] == "service_healthy"
