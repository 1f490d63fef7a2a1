"""MLflow tracking server and model registry (sqlite backend, artifacts in the object store,
written as the ``fashion-mlflow`` user: its prefix ``mlflow/`` of the models bucket only)."""

from __future__ import annotations

import sys

from stack.secrets import S3_MLFLOW_USER, load_for
from stack.service import Service, http_get


class MLflowServer(Service):
    """Experiment tracking and the model registry the model server resolves aliases from."""

    role = "mlflow"
    implementation = "MLflow tracking server (sqlite, artifacts in S3)"
    ready_timeout_s = 120.0

    @property
    def port(self) -> int:
        return self.settings.stack.mlflow_port

    @property
    def endpoint(self) -> str:
        return self.settings.registry.tracking_uri

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.data_dir / 'mlflow.db'}",
            "--artifacts-destination", f"s3://{self.settings.storage.models_bucket}/mlflow",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        s = self.settings
        return {
            "MLFLOW_S3_ENDPOINT_URL": s.storage.endpoint_url,
            "AWS_ACCESS_KEY_ID": S3_MLFLOW_USER,
            "AWS_SECRET_ACCESS_KEY": load_for(s).s3_users[S3_MLFLOW_USER],
            "AWS_DEFAULT_REGION": s.storage.region,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }

    def ready(self) -> bool:
        return http_get(f"{self.endpoint}/health")[0] == 200
