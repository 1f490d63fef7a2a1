"""The local stack itself: real components running, idempotent ``up``, bucket events reaching
Kafka (MinIO) and SQS (LocalStack), MLflow artifacts in S3, the pip-only fallback profile."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.parse
import uuid
from pathlib import Path

import boto3
import pytest
from confluent_kafka import Consumer, Producer

from fashion_search.ingest.publisher import kafka_config
from fashion_search.settings import ENV_FILE_VARIABLE, Settings, StackSettings
from fashion_search.storage import ObjectStore
from stack.orchestrator import down, status, up
from stack.postgres import Postgres
from stack.process import port_in_use
from stack.secrets import prepare
from stack.service import StackError
from tests.helpers import free_port


def test_every_component_runs(stack_settings: Settings) -> None:
    rows = {row.role: row for row in status(stack_settings)}
    assert set(rows) == {"postgres", "kafka", "s3", "mlflow", "localstack"}
    assert all(row.pid for row in rows.values()), rows
    native_tools = all(shutil.which(t) for t in ("go", "java", "mvn"))
    if stack_settings.stack.profile == "native" and native_tools:
        assert not [r.role for r in rows.values() if r.fallback], "native tools present"
        assert rows["kafka"].implementation.startswith("Apache Kafka")
        assert rows["s3"].implementation.startswith("MinIO")


def test_up_is_idempotent(stack_settings: Settings) -> None:
    before = {row.role: row.pid for row in status(stack_settings)}
    assert up(stack_settings) == []
    assert {row.role: row.pid for row in status(stack_settings)} == before


def _consume_until(consumer: Consumer, predicate: object, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        value = json.loads(message.value())
        if predicate(value):  # type: ignore[operator]
            return value
    raise AssertionError("no matching message before the timeout")


def test_minio_upload_notifies_kafka(stack_settings: Settings) -> None:
    s3 = {row.role: row for row in status(stack_settings)}["s3"]
    if s3.fallback:
        pytest.skip("the S3 fallback (moto) sends no bucket notifications to Kafka")
    key = f"tests/{uuid.uuid4().hex}/navy shirt.jpg"
    consumer = Consumer(
        kafka_config(
            stack_settings,
            {
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
            },
        )
    )
    consumer.subscribe([stack_settings.kafka.uploads_topic])
    try:
        ObjectStore(stack_settings).put(stack_settings.storage.uploads_bucket, key, b"\xff\xd8test")
        event = _consume_until(
            consumer,
            lambda e: urllib.parse.unquote_plus(e["Records"][0]["s3"]["object"]["key"]) == key,
        )
    finally:
        consumer.close()
    record = event["Records"][0]
    assert record["eventName"].startswith("s3:ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == stack_settings.storage.uploads_bucket
    assert event["Key"] == f"{stack_settings.storage.uploads_bucket}/{key}"


def test_localstack_upload_reaches_sqs(stack_settings: Settings) -> None:
    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    endpoint = stack_settings.ingest.sqs_endpoint_url
    s3 = session.client("s3", endpoint_url=endpoint)
    sqs = session.client("sqs", endpoint_url=endpoint)
    queue_url = sqs.get_queue_url(QueueName=stack_settings.ingest.uploads_queue)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    assert "fashion-uploads-events-dlq" in attributes["Attributes"]["RedrivePolicy"]
    key = f"tests/{uuid.uuid4().hex}/red dress.jpg"
    s3.put_object(Bucket=stack_settings.storage.uploads_bucket, Key=key, Body=b"\xff\xd8test")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            body = json.loads(message["Body"])
            records = body.get("Records", [])
            if records and urllib.parse.unquote_plus(records[0]["s3"]["object"]["key"]) == key:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                assert records[0]["eventName"].startswith("ObjectCreated:")
                return
    raise AssertionError("the upload's S3 event never reached SQS")


def test_mlflow_keeps_artifacts_in_the_object_store(
    stack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", stack_settings.storage.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", stack_settings.storage.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", stack_settings.storage.secret_key)
    client = mlflow.MlflowClient(stack_settings.registry.tracking_uri)
    experiment = client.get_experiment_by_name("stack-tests") or client.get_experiment(
        client.create_experiment("stack-tests")
    )
    run = client.create_run(experiment.experiment_id)
    client.log_metric(run.info.run_id, "loss", 0.5)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run.info.run_id)
    listed = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert listed == ["note.txt"]
    objects = ObjectStore(stack_settings).client.list_objects_v2(
        Bucket=stack_settings.storage.models_bucket, Prefix="mlflow/"
    )
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys


@pytest.mark.stack  # starts servers of its own
def test_pip_profile_fallbacks_serve_the_same_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = StackSettings(
        profile="pip", state_dir=tmp_path / "stack", kafka_port=free_port(), s3_port=free_port()
    )
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(stack.local_env_file))  # this stack's owner
    prepare(Settings(stack=stack))
    settings = Settings(stack=stack)
    assert not settings.kafka.username, "Tansu has no SASL: its clients use PLAINTEXT"
    started = up(settings, ("kafka", "s3"))
    try:
        assert started == ["kafka", "s3"]
        rows = {r.role: r for r in status(settings) if r.role in started}
        assert all(r.fallback and r.pid for r in rows.values())
        store = ObjectStore(settings)
        store.put(settings.storage.images_bucket, "products/1.jpg", b"image")
        assert store.get(settings.storage.images_bucket, "products/1.jpg") == b"image"
        producer = Producer(kafka_config(settings))
        producer.produce(settings.kafka.output_topic, key=b"k", value=b'{"ok": true}')
        assert producer.flush(10) == 0
        consumer = Consumer(
            kafka_config(
                settings,
                {
                    "group.id": "fallback-test",
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": 2000,
                },
            )
        )
        consumer.subscribe([settings.kafka.output_topic])
        try:
            assert _consume_until(consumer, lambda v: v == {"ok": True}) == {"ok": True}
        finally:
            consumer.close()
    finally:
        stopped = down(settings, ("kafka", "s3"))
    assert sorted(stopped) == ["kafka", "s3"]
    assert not port_in_use(settings.stack.kafka_port)
    assert not port_in_use(settings.stack.s3_port)


@pytest.mark.stack  # starts servers of its own
def test_a_port_taken_by_a_stranger_is_reported(tmp_path: Path) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        settings = Settings(stack=StackSettings(state_dir=tmp_path / "stack", pg_port=port))
        with pytest.raises(StackError, match=f"port {port} is in use"):
            Postgres(settings).start()


@pytest.mark.parametrize(
    ("code", "ready"),
    [("NOT_COORDINATOR", False), ("COORDINATOR_LOAD_IN_PROGRESS", False),
     ("_TIMED_OUT", False), ("GROUP_AUTHORIZATION_FAILED", None)],
)  # fmt: skip
def test_a_coordinator_being_elected_means_not_ready_yet(
    monkeypatch: pytest.MonkeyPatch, code: str, ready: bool | None
) -> None:
    """A unit-level stand-in for the broker: its transient answers while electing a group
    coordinator are "not ready yet" for readiness polling; other errors still raise."""
    from concurrent.futures import Future

    from confluent_kafka import KafkaError, KafkaException

    from stack import topics

    class Admin:
        def __init__(self, config: dict[str, object]) -> None:
            pass

        def describe_consumer_groups(self, groups: list[str]) -> dict[str, Future[object]]:
            future: Future[object] = Future()
            future.set_exception(KafkaException(KafkaError(getattr(KafkaError, code))))
            return {groups[0]: future}

    monkeypatch.setattr(topics, "AdminClient", Admin)
    if ready is None:
        with pytest.raises(KafkaException):
            topics.group_has_member(Settings(), "g")
    else:
        assert topics.group_has_member(Settings(), "g") is ready
