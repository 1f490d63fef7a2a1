"""Kafka producer of the ingestion path's output and dead-letter messages and of relayed
feedback, and the client
configuration every Kafka client of the project is made with (:func:`kafka_config`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from fashion_search.errors import DependencyUnavailableError
from fashion_search.ingest.messages import DeadLetter, UploadProcessed
from fashion_search.learning.feedback import FeedbackRecord
from fashion_search.settings import Settings
from fashion_search.telemetry.metrics import INGEST_DEAD_LETTERS, INGEST_PROCESSED

#: The SASL mechanism of brokers with credentials (the local stack's: SCRAM users).
SASL_MECHANISM = "SCRAM-SHA-256"


def kafka_config(settings: Settings, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Configuration of a confluent-kafka client (Producer, Consumer, AdminClient) for the
    settings' broker, with the librdkafka properties of ``extra``: SASL_PLAINTEXT with
    SCRAM-SHA-256 as ``FS_KAFKA_USERNAME`` when that is set, PLAINTEXT when not."""
    kafka = settings.kafka
    config: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap}
    if kafka.username:
        config.update(
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": SASL_MECHANISM,
                "sasl.username": kafka.username,
                "sasl.password": kafka.password,
            }
        )
    return {**config, **(extra or {})}


class PublishError(DependencyUnavailableError):
    """Messages could not be delivered to Kafka (the batch must be processed again)."""


class KafkaPublisher:
    """Produces to the output, dead-letter and feedback topics; :meth:`flush` confirms
    delivery."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = Producer(
            kafka_config(settings, {"enable.idempotence": True, "linger.ms": 2, "log_level": 4})
        )
        self._errors: list[str] = []

    def _produce(self, topic: str, key: str, value: bytes) -> None:
        self._producer.produce(topic, value, key.encode(), on_delivery=self._delivered)
        self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}: {error}")

    def processed(self, message: UploadProcessed) -> None:
        """Queue an output-topic message (keyed by bucket/key), counted by its status."""
        INGEST_PROCESSED.labels(message.status).inc()
        self._produce(
            self.settings.kafka.output_topic, f"{message.bucket}/{message.key}", message.to_json()
        )

    def dead_letter(self, letter: DeadLetter) -> None:
        """Queue a dead-letter record (keyed by bucket/key when known), counted by reason."""
        INGEST_DEAD_LETTERS.labels(letter.reason).inc()
        key = f"{letter.bucket}/{letter.key}" if letter.key else letter.reason
        self._produce(self.settings.kafka.dead_letter_topic, key, letter.to_json())

    def feedback(self, record: FeedbackRecord) -> None:
        """Queue a feedback record (keyed by session, so a session's signals stay in order)."""
        self._produce(self.settings.kafka.feedback_topic, record.session_id, record.to_json())

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued message is acknowledged; PublishError if any is not."""
        remaining = self._producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if remaining or errors:
            raise PublishError(f"{remaining} messages not delivered in {timeout_s} s; {errors}")
