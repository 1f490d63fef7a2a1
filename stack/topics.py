"""Kafka topics of the system, created explicitly (brokers may not auto-create reliably)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from fashion_search.ingest.publisher import kafka_config
from fashion_search.settings import Settings
from stack.process import port_in_use


def kafka_ready(settings: Settings) -> bool:
    """Whether the broker answers a metadata request (with the settings' credentials)."""
    host, _, port = settings.kafka.bootstrap.split(",")[0].rpartition(":")
    if not port_in_use(int(port), host):
        return False  # checked first: librdkafka logs every refused connection
    metadata = AdminClient(kafka_config(settings, {"log_level": 4})).list_topics(timeout=2)
    return bool(metadata.brokers)


def ensure_topics(settings: Settings, topics: tuple[str, ...] | None = None) -> None:
    """Create the system's topics that do not exist yet."""
    admin = AdminClient(kafka_config(settings, {"log_level": 4}))
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(name, num_partitions=settings.kafka.partitions, replication_factor=1)
        for name in (topics or settings.kafka.topics)
        if name not in existing
    ]
    if not wanted:
        return
    for future in admin.create_topics(wanted, request_timeout=15).values():
        try:
            future.result()
        except KafkaException as error:
            if error.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise


#: Answers of a broker that is still electing or loading a group's coordinator, or that does
#: not answer in time (down, starting): "not yet".
_COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._TIMED_OUT,
}


def group_has_member(settings: Settings, group: str, timeout_s: float = 3.0) -> bool:
    """Whether a member of consumer group ``group`` has partitions assigned; False (not yet)
    while the broker's group coordinator is being elected or loaded, or the answer is a
    retriable error or no answer within ``timeout_s``."""
    admin = AdminClient(
        kafka_config(settings, {"log_level": 4, "socket.timeout.ms": int(timeout_s * 1000)})
    )
    try:
        described = admin.describe_consumer_groups([group])[group].result()
    except KafkaException as exception:
        error = exception.args[0]
        if isinstance(error, KafkaError) and (
            error.code() in _COORDINATOR_NOT_READY or error.retriable()
        ):
            return False
        raise
    return any(member.assignment.topic_partitions for member in described.members)
