"""LocalStack runtime (S3 + SQS), run natively for the AWS-shaped trigger path.

Its init hooks are the repository's ``localstack/init`` folder, the same files the
docker-compose stack mounts, so both create the same buckets, queues and notifications.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fashion_search.settings import REPO_ROOT
from stack.service import Service, StackError, http_get, python_venv

INIT_DIR = REPO_ROOT / "localstack" / "init"
REQUIREMENTS = (
    "localstack-core[runtime]==4.13.1",  # 2026.x needs Python 3.12
    "cbor2<6",
    "pyopenssl<25",
    "cryptography<45",
    "service-identity",
)


class LocalStack(Service):
    """Emulated AWS S3 + SQS: uploads bucket -> SQS queue (with a dead-letter queue)."""

    role = "localstack"
    implementation = "LocalStack 4.13.1 runtime (S3, SQS)"
    ready_timeout_s = 90.0

    @property
    def port(self) -> int:
        return self.settings.stack.localstack_port

    @property
    def endpoint(self) -> str:
        return self.settings.ingest.sqs_endpoint_url

    @property
    def _venv(self) -> Path:
        return self.settings.cache_dir / "localstack-4.13.1"

    def install(self) -> None:
        python_venv(self._venv, REQUIREMENTS, "localstack")

    def prepare(self) -> None:
        hooks = self.data_dir / "etc" / "localstack" / "init"
        shutil.rmtree(hooks, ignore_errors=True)
        shutil.copytree(INIT_DIR, hooks)

    def command(self) -> list[str]:
        return [str(self._venv / "bin" / "python"), "-m", "localstack.runtime.main"]

    def environment(self) -> dict[str, str]:
        s = self.settings
        return {
            "OVERRIDE_IN_DOCKER": "0",  # keep its files under FILESYSTEM_ROOT
            "FILESYSTEM_ROOT": str(self.data_dir),
            "GATEWAY_SERVER": "hypercorn",
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "SERVICES": "s3,sqs",
            "DNS_ADDRESS": "0",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "FS_IMAGES_BUCKET": s.storage.images_bucket,
            "FS_DATASETS_BUCKET": s.storage.datasets_bucket,
            "FS_MODELS_BUCKET": s.storage.models_bucket,
            "FS_UPLOADS_BUCKET": s.storage.uploads_bucket,
            "FS_UPLOADS_QUEUE": s.ingest.uploads_queue,
        }

    def ready(self) -> bool:
        status, body = http_get(f"{self.endpoint}/_localstack/init/ready")
        if status != 200:
            return False
        init = json.loads(body)
        failed = [s["name"] for s in init.get("scripts", []) if s.get("state") == "ERROR"]
        if failed:
            raise StackError(f"LocalStack init scripts failed: {failed}")
        return bool(init.get("completed"))
