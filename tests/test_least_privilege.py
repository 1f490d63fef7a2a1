"""Least privilege on the real local stack: each component's PostgreSQL role, MinIO user and Kafka
user may do what it needs and is refused the rest; nothing answers without credentials."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from botocore.exceptions import ClientError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from psycopg import errors
from psycopg.conninfo import make_conninfo

from fashion_search.catalog.migrate import migrate
from fashion_search.ingest.publisher import kafka_config
from fashion_search.settings import LEGACY_VARIABLES, Settings, variable
from fashion_search.storage import ObjectStore
from stack.orchestrator import status
from stack.secrets import (
    KAFKA_INGEST_USER,
    PG_API_ROLE,
    PG_INGEST_ROLE,
    S3_API_USER,
    S3_INGEST_USER,
    S3_MLFLOW_USER,
    S3_MODEL_SERVER_USER,
    S3_UPLOADER_USER,
    Secrets,
    load_for,
)


@pytest.fixture(scope="module")
def secrets(stack_settings: Settings) -> Secrets:
    return load_for(stack_settings)


@pytest.fixture
def catalog_db(scratch_database: str) -> str:
    """A migrated scratch catalog with one model version's partition, made after the
    migrations as a rollout makes it (owner's conninfo)."""
    migrate(scratch_database, 4)
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        conn.execute("SELECT create_embedding_partition('v-1', 4)")
        conn.execute(
            "INSERT INTO products (id, product_display_name, image_key, dataset)"
            " VALUES (1, 'Navy shirt', 'products/1.jpg', 'test')"
        )
    return scratch_database


def _as(conninfo: str, role: str, secrets: Secrets) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        make_conninfo(conninfo, user=role, password=secrets.pg_passwords[role]), autocommit=True
    )


def test_the_database_wants_a_password(stack_settings: Settings, secrets: Secrets) -> None:
    """SCRAM for everyone, the superuser included (no trust)."""
    for user, password in (("postgres", ""), ("postgres", "wrong"), (PG_API_ROLE, "wrong")):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                make_conninfo(stack_settings.database.url, user=user, password=password)
            ).close()


def test_the_api_role_reads_and_writes_nothing(catalog_db: str, secrets: Secrets) -> None:
    with _as(catalog_db, PG_API_ROLE, secrets) as conn:
        assert conn.execute("SELECT product_display_name FROM products").fetchall() == [
            ("Navy shirt",)
        ]
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)
        # A partition made after the migrations, directly and through the parent.
        assert conn.execute("SELECT count(*) FROM product_embeddings_v_1").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM product_embeddings").fetchone() == (0,)
        for statement in (
            "UPDATE products SET product_display_name = 'x'",
            "INSERT INTO products (product_display_name, image_key, dataset)"
            " VALUES ('x', 'x', 'x')",
            "DELETE FROM products",
            "INSERT INTO product_embeddings_v_1 VALUES ('v-1', 1, '[1,2,3,4]')",
            "UPDATE catalog_versions SET state = 'retired'",
            "DELETE FROM api_keys",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def test_feedback_is_inserted_by_the_api_and_marked_relayed_by_the_ingest_path(
    catalog_db: str, secrets: Secrets
) -> None:
    insert = ("INSERT INTO feedback (signal, query, product_id, position, session_id)"
              " VALUES ('click', 'navy shirt', 1, 1, 's')")  # fmt: skip
    with _as(catalog_db, PG_API_ROLE, secrets) as conn:
        conn.execute(insert)
        for statement in ("UPDATE feedback SET query = 'x'", "DELETE FROM feedback"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
    with _as(catalog_db, PG_INGEST_ROLE, secrets) as conn:
        assert conn.execute("UPDATE feedback SET published_at = now()").rowcount == 1
        for statement in (insert, "UPDATE feedback SET query = 'x'", "DELETE FROM feedback"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def test_the_ingest_role_writes_uploads_and_embeddings(catalog_db: str, secrets: Secrets) -> None:
    with _as(catalog_db, PG_INGEST_ROLE, secrets) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('uploads/a.jpg', 0))")
        row = conn.execute(
            "INSERT INTO products (product_display_name, image_key, dataset, source_bucket,"
            " source_key, source_etag) VALUES ('Upload', 'uploads/x', 'uploads', 'uploads',"
            " 'a.jpg', 'e1') ON CONFLICT (source_bucket, source_key) DO UPDATE"
            " SET source_etag = EXCLUDED.source_etag RETURNING id"
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO product_embeddings_v_1 (model_version, product_id, embedding)"
            " SELECT 'v-1', id, '[1,2,3,4]' FROM products WHERE id = %s"
            " ON CONFLICT (model_version, product_id) DO UPDATE SET embedding = EXCLUDED.embedding",
            row,
        )
        conn.execute("DELETE FROM product_embeddings WHERE product_id = %s", row)
        assert conn.execute("SELECT state FROM catalog_versions").fetchone() == ("building",)
    with _as(catalog_db, PG_INGEST_ROLE, secrets) as conn:
        assert conn.execute("DELETE FROM products WHERE source_key = 'a.jpg'").rowcount == 1
        for statement in ("SELECT * FROM api_keys", "UPDATE catalog_versions SET state = 'ready'"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


# --- S3 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minio(stack_settings: Settings) -> Iterator[ObjectStore]:
    """The root user's store on the stack's own buckets (the policies name those); what the
    tests write under their prefix goes after."""
    if {row.role: row for row in status(stack_settings)}["s3"].fallback:
        pytest.skip("the S3 fallback (moto) has no users or policies")
    root = ObjectStore(stack_settings)
    yield root
    for bucket in stack_settings.storage.buckets:
        for key in root.list_etags(bucket, prefix=PREFIX):
            root.client.delete_object(Bucket=bucket, Key=key)
        for key in root.list_etags(bucket, prefix=f"mlflow/{PREFIX}"):
            root.client.delete_object(Bucket=bucket, Key=key)


PREFIX = f"least-privilege-{uuid.uuid4().hex[:8]}/"


def _store(settings: Settings, secrets: Secrets, user: str) -> ObjectStore:
    keys = {"access_key": user, "secret_key": secrets.s3_users[user]}
    return ObjectStore(settings.replace(storage=keys))


def _denied(call: object, *args: object, **kwargs: object) -> None:
    with pytest.raises(ClientError) as raised:
        call(*args, **kwargs)  # type: ignore[operator]
    assert raised.value.response["Error"]["Code"] == "AccessDenied"


def test_the_api_user_reads_images_and_writes_nothing(
    stack_settings: Settings, secrets: Secrets, minio: ObjectStore
) -> None:
    s = stack_settings.storage
    minio.put(s.images_bucket, f"{PREFIX}1.jpg", b"image")
    minio.put(s.uploads_bucket, f"{PREFIX}drop.jpg", b"upload")
    api = _store(stack_settings, secrets, S3_API_USER)
    assert api.get(s.images_bucket, f"{PREFIX}1.jpg") == b"image"
    assert api.get(s.uploads_bucket, f"{PREFIX}drop.jpg") == b"upload"
    with urllib.request.urlopen(api.presigned_url(s.images_bucket, f"{PREFIX}1.jpg")) as reply:
        assert reply.read() == b"image"  # signed with its own key
    assert not api.exists(s.images_bucket, f"{PREFIX}missing.jpg")  # the API's health check
    _denied(api.put, s.images_bucket, f"{PREFIX}2.jpg", b"x")
    _denied(api.put, s.models_bucket, f"{PREFIX}model.onnx", b"x")
    _denied(api.get, s.models_bucket, f"{PREFIX}model.onnx")
    _denied(api.client.delete_object, Bucket=s.images_bucket, Key=f"{PREFIX}1.jpg")
    assert minio.exists(s.images_bucket, f"{PREFIX}1.jpg")


def test_an_uploader_only_drops_uploads(
    stack_settings: Settings, secrets: Secrets, minio: ObjectStore
) -> None:
    s = stack_settings.storage
    minio.put(s.models_bucket, f"{PREFIX}model.onnx", b"weights")
    uploader = _store(stack_settings, secrets, S3_UPLOADER_USER)
    uploader.put(s.uploads_bucket, f"{PREFIX}new.jpg", b"\xff\xd8upload")
    assert minio.get(s.uploads_bucket, f"{PREFIX}new.jpg") == b"\xff\xd8upload"
    _denied(uploader.get, s.models_bucket, f"{PREFIX}model.onnx")
    _denied(uploader.get, s.uploads_bucket, f"{PREFIX}new.jpg")
    _denied(uploader.put, s.images_bucket, f"{PREFIX}x.jpg", b"x")


def test_the_ingest_user_copies_uploads_into_images_only(
    stack_settings: Settings, secrets: Secrets, minio: ObjectStore
) -> None:
    s = stack_settings.storage
    etag = minio.put(s.uploads_bucket, f"{PREFIX}shirt.jpg", b"\xff\xd8shirt")
    ingest = _store(stack_settings, secrets, S3_INGEST_USER)
    assert ingest.read(s.uploads_bucket, f"{PREFIX}shirt.jpg", etag).data == b"\xff\xd8shirt"
    assert f"{PREFIX}shirt.jpg" in ingest.list_etags(s.uploads_bucket, PREFIX)
    ingest.copy(s.uploads_bucket, f"{PREFIX}shirt.jpg", s.images_bucket, f"{PREFIX}u.jpg", etag)
    assert minio.get(s.images_bucket, f"{PREFIX}u.jpg") == b"\xff\xd8shirt"
    _denied(ingest.put, s.models_bucket, f"{PREFIX}model.onnx", b"x")
    _denied(ingest.put, s.uploads_bucket, f"{PREFIX}forged.jpg", b"x")


def test_mlflow_and_the_model_server_keep_to_the_models_bucket(
    stack_settings: Settings, secrets: Secrets, minio: ObjectStore
) -> None:
    s = stack_settings.storage
    mlflow = _store(stack_settings, secrets, S3_MLFLOW_USER)
    mlflow.put(s.models_bucket, f"mlflow/{PREFIX}model.onnx", b"weights")
    assert list(mlflow.list_etags(s.models_bucket, f"mlflow/{PREFIX}")) == [
        f"mlflow/{PREFIX}model.onnx"
    ]
    _denied(mlflow.put, s.models_bucket, f"{PREFIX}outside.onnx", b"x")
    _denied(mlflow.put, s.images_bucket, f"{PREFIX}1.jpg", b"x")
    server = _store(stack_settings, secrets, S3_MODEL_SERVER_USER)
    assert server.get(s.models_bucket, f"mlflow/{PREFIX}model.onnx") == b"weights"
    _denied(server.put, s.models_bucket, f"mlflow/{PREFIX}model.onnx", b"replaced")


# --- Kafka ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def native_kafka(stack_settings: Settings) -> Settings:
    if {row.role: row for row in status(stack_settings)}["kafka"].fallback:
        pytest.skip("the Kafka fallback (Tansu) is PLAINTEXT only")
    return stack_settings


def _topics(settings: Settings, timeout_s: float = 5) -> set[str]:
    admin = AdminClient(kafka_config(settings, {"log_level": 0}))
    return set(admin.list_topics(timeout=timeout_s).topics)


def test_kafka_refuses_clients_without_the_right_password(
    native_kafka: Settings, secrets: Secrets
) -> None:
    ingest = native_kafka.replace(
        kafka={"username": KAFKA_INGEST_USER, "password": secrets.kafka_users[KAFKA_INGEST_USER]}
    )
    assert native_kafka.kafka.uploads_topic in _topics(ingest)
    for username, password in (("", ""), (KAFKA_INGEST_USER, "wrong"), ("nobody", "x")):
        anonymous = native_kafka.replace(kafka={"username": username, "password": password})
        with pytest.raises(KafkaException):
            _topics(anonymous)


# --- The apps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "pg_role", "s3_user", "kafka_user"),
    [("api", PG_API_ROLE, S3_API_USER, ""), ("ui", None, "", ""),
     ("model-server", None, S3_MODEL_SERVER_USER, ""),
     ("dispatcher", PG_INGEST_ROLE, S3_INGEST_USER, KAFKA_INGEST_USER)],
)  # fmt: skip
def test_each_app_gets_its_own_credentials_only(
    stack_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    app: str,
    pg_role: str | None,
    s3_user: str,
    kafka_user: str,
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    from stack.apps import app_environment, apps

    environment = app_environment(stack_settings, apps(stack_settings)[app])
    assert bool(environment[variable("access.api_key")]) == (app == "ui")  # only the UI's
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if pg_role is None:
        for name in (variable("database.url"), LEGACY_VARIABLES["database.url"]):
            monkeypatch.delenv(name, raising=False)
    seen = Settings()  # as the app reads its settings
    database = conninfo_to_dict(seen.database.url)
    assert database["user"] == (pg_role or "postgres")
    assert ("password" in database) == (pg_role is not None), "no owner password"
    assert seen.storage.access_key == s3_user
    assert seen.storage.secret_key != stack_settings.storage.secret_key  # never the root's
    if not stack_settings.stack.kafka_is_plaintext():
        assert seen.kafka.username == kafka_user
        assert seen.kafka.password != stack_settings.kafka.password  # never the admin's


def test_kafka_users_keep_to_their_topics(native_kafka: Settings, secrets: Secrets) -> None:
    """ACLs: the ingest user may not forge bucket events, MinIO's may not read results."""
    from confluent_kafka import Consumer, KafkaError, Producer

    from stack.secrets import KAFKA_MINIO_USER

    def as_user(user: str) -> Settings:
        return native_kafka.replace(kafka={"username": user, "password": secrets.kafka_users[user]})

    errors_seen: list[KafkaError] = []
    producer = Producer(kafka_config(as_user(KAFKA_INGEST_USER), {"log_level": 0}))
    producer.produce(
        native_kafka.kafka.uploads_topic, b"{}", b"forged",
        on_delivery=lambda error, _: errors_seen.append(error),
    )  # fmt: skip
    producer.flush(15)
    assert [e.code() for e in errors_seen] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

    consumer = Consumer(
        kafka_config(as_user(KAFKA_MINIO_USER), {"group.id": "minio-reads", "log_level": 0})
    )
    try:
        consumer.subscribe([native_kafka.kafka.output_topic])
        message = None
        for _ in range(20):
            message = consumer.poll(0.5)
            if message is not None and message.error():
                break
        assert message is not None and message.error() is not None
        assert message.error().code() in (
            KafkaError.GROUP_AUTHORIZATION_FAILED,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        )
    finally:
        consumer.close()
