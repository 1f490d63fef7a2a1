"""docker-compose.yml is valid for Docker Compose (validated by the compose CLI, no daemon)."""

from __future__ import annotations

import json
import subprocess

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
    assert services["minio"]["environment"]["MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY"] == "fashion.uploads"


def test_compose_rejects_a_broken_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api:\n    image: x\n    ports: 12\n")
    result = subprocess.run(
        [*compose_command(Settings()), "-f", str(broken), "config", "--quiet"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "ports" in result.stderr
