"""S3 servers: MinIO built from source with ``go install`` (native), moto (pip-only fallback)."""

from __future__ import annotations

from pathlib import Path

from fashion_search.storage import ObjectStore
from stack.secrets import KAFKA_MINIO_USER, S3_ROOT_USER, load_for
from stack.service import Service, go_install, http_get, python_venv

#: MinIO's last source-only publication resolvable through the Go module proxy (a commit of
#: github.com/minio/minio, 2026-02-12; the RELEASE.* tags themselves are refused by the proxy).
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
#: MinIO's Kafka notification targets, both to the uploads topic: ``PRIMARY`` sends each event
#: at once and drops it while Kafka is away; ``QUEUED`` keeps it on disk until Kafka has it,
#: but sends only when MinIO next replays its queue (every 3 s: alone, it added 0-3 s to every
#: upload). The dispatcher drops the second copy of an event (decision 0043).
MINIO_KAFKA_TARGETS = ("PRIMARY", "QUEUED")


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
            **{k: v for target in MINIO_KAFKA_TARGETS for k, v in self._kafka(target).items()},
            # Events are kept on disk until Kafka has them: none is lost while it is away.
            "MINIO_NOTIFY_KAFKA_QUEUE_DIR_QUEUED": str(self.events_dir),
        }

    def _kafka(self, target: str) -> dict[str, str]:
        """A notification target to the uploads topic, with its SCRAM login (none for the
        fallback broker, no SASL)."""
        s = self.settings
        env = {
            f"MINIO_NOTIFY_KAFKA_ENABLE_{target}": "on",
            f"MINIO_NOTIFY_KAFKA_BROKERS_{target}": s.kafka.bootstrap,
            f"MINIO_NOTIFY_KAFKA_TOPIC_{target}": s.kafka.uploads_topic,
        }
        if s.stack.kafka_is_plaintext():
            return env
        return env | {
            f"MINIO_NOTIFY_KAFKA_SASL_{target}": "on",
            f"MINIO_NOTIFY_KAFKA_SASL_MECHANISM_{target}": "sha256",
            f"MINIO_NOTIFY_KAFKA_SASL_USERNAME_{target}": KAFKA_MINIO_USER,
            f"MINIO_NOTIFY_KAFKA_SASL_PASSWORD_{target}": load_for(s).kafka_users[KAFKA_MINIO_USER],
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


def announce_uploads(
    store: ObjectStore, bucket: str, targets: tuple[str, ...] = MINIO_KAFKA_TARGETS
) -> None:
    """Make MinIO announce objects created in and removed from ``bucket`` on its Kafka
    ``targets`` (both, unless a benchmark compares one)."""
    store.client.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": f"arn:minio:sqs::{target}:kafka",
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                }
                for target in targets
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
