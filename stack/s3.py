"""S3 servers: MinIO built from source with ``go install`` (native), moto (pip-only fallback)."""

from __future__ import annotations

from pathlib import Path

from fashion_search.storage import ObjectStore
from stack.secrets import KAFKA_MINIO_USER, S3_ROOT_USER, load_for
from stack.service import Service, go_install, http_get, python_venv

#: MinIO's last source-only publication resolvable through the Go module proxy (a commit of
#: github.com/minio/minio, 2026-02-12; the RELEASE.* tags themselves are refused by the proxy).
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
#: The Kafka notification target configured below, as MinIO names it.
MINIO_KAFKA_ARN = "arn:minio:sqs::PRIMARY:kafka"


class S3Server(Service):
    """Object store for images, datasets, model artifacts and uploads."""

    role = "s3"

    @property
    def port(self) -> int:
        return self.settings.stack.s3_port

    @property
    def endpoint(self) -> str:
        return self.settings.storage.endpoint_url


class MinIO(S3Server):
    """MinIO; new objects in the uploads bucket are announced on Kafka."""

    implementation = f"MinIO (go install github.com/minio/minio@{MINIO_VERSION})"
    ready_timeout_s = 60.0

    @property
    def binary(self) -> Path:
        return self.settings.cache_dir / f"minio-{MINIO_VERSION}" / "minio"

    def install(self) -> None:
        go_install("github.com/minio/minio", MINIO_VERSION, self.binary)

    def command(self) -> list[str]:
        return [
            str(self.binary), "server", str(self.data_dir), "--quiet",
            "--address", f"127.0.0.1:{self.port}",
            "--console-address", f"127.0.0.1:{self.settings.stack.s3_console_port}",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        s = self.settings
        return {
            "MINIO_ROOT_USER": S3_ROOT_USER,
            "MINIO_ROOT_PASSWORD": load_for(s).owner(S3_ROOT_USER),
            "MINIO_REGION": s.storage.region,
            "MINIO_UPDATE": "off",
            # The background scanner (usage totals, healing, lifecycle rules: none of which this
            # single-drive stack needs) took 16% of a core while idle, beside the model on 2.
            "MINIO_SCANNER_SPEED": "slowest",
            "MINIO_NOTIFY_KAFKA_ENABLE_PRIMARY": "on",
            "MINIO_NOTIFY_KAFKA_BROKERS_PRIMARY": s.kafka.bootstrap,
            "MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY": s.kafka.uploads_topic,
            # Events are kept on disk until Kafka has them: none is lost while it is away.
            "MINIO_NOTIFY_KAFKA_QUEUE_DIR_PRIMARY": str(self.events_dir),
            **self._kafka_login(),
        }

    def _kafka_login(self) -> dict[str, str]:
        """The notification target's SCRAM login (none for the fallback broker, no SASL)."""
        if self.settings.stack.kafka_is_plaintext():
            return {}
        return {
            "MINIO_NOTIFY_KAFKA_SASL_PRIMARY": "on",
            "MINIO_NOTIFY_KAFKA_SASL_MECHANISM_PRIMARY": "sha256",
            "MINIO_NOTIFY_KAFKA_SASL_USERNAME_PRIMARY": KAFKA_MINIO_USER,
            "MINIO_NOTIFY_KAFKA_SASL_PASSWORD_PRIMARY": load_for(self.settings).kafka_users[
                KAFKA_MINIO_USER
            ],
        }

    @property
    def events_dir(self) -> Path:
        """Where MinIO queues bucket events that Kafka has not acknowledged yet."""
        return self.data_dir.parent / "minio-events"

    def ready(self) -> bool:
        return http_get(f"{self.endpoint}/minio/health/ready")[0] == 200

    def after_start(self) -> None:
        store = ObjectStore(self.settings)
        store.ensure_buckets()
        announce_uploads(store, self.settings.storage.uploads_bucket)


def announce_uploads(store: ObjectStore, bucket: str) -> None:
    """Make MinIO announce objects created in and removed from ``bucket`` on its Kafka
    target."""
    store.client.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": MINIO_KAFKA_ARN,
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                }
            ]
        },
    )


class MotoS3(S3Server):
    """Fallback S3 server (moto); it cannot send bucket notifications to Kafka."""

    implementation = "moto server 5.2 - FALLBACK for MinIO (no bucket notifications to Kafka)"
    is_fallback = True
    ready_timeout_s = 30.0
    requirements = ("moto[server]==5.2.5",)

    @property
    def _venv(self) -> Path:
        return self.settings.cache_dir / "moto-5.2.5"

    def install(self) -> None:
        python_venv(self._venv, self.requirements, "moto")

    def command(self) -> list[str]:
        return [str(self._venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        ObjectStore(self.settings).client.list_buckets()
        return True

    def after_start(self) -> None:
        ObjectStore(self.settings).ensure_buckets()
