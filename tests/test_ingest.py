"""Bucket events end to end against the real stack: MinIO -> Kafka -> dispatcher -> function ->
catalog + output topic, the LocalStack S3 -> SQS -> poller path, and every way an event can fail.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg_pool import ConnectionPool
from pydantic.alias_generators import to_camel

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.dataset import DatasetItem, iter_dataset
from fashion_search.embedding_client import EmbeddingClient, ModelServerUnavailableError
from fashion_search.errors import ProductNotFoundError
from fashion_search.ingest.processor import UploadProcessor
from fashion_search.ingest.publisher import KafkaPublisher, kafka_config
from fashion_search.settings import REPO_ROOT, Settings
from fashion_search.storage import ObjectStore
from functions.events.bucket_event import BucketEventFunction
from functions.events.envelopes import kafka_event
from functions.events.kafka_dispatcher import KafkaDispatcher
from functions.events.sqs_poller import SqsPoller, make_sqs_client
from stack.orchestrator import status
from stack.process import ManagedProcess
from stack.s3 import announce_uploads
from stack.topics import ensure_topics, group_has_member
from tests.conftest import SEARCH_ROWS, catalog_database
from tests.helpers import (
    child_env,
    database,
    jpeg,
    scrape,
    start_model_server,
    start_process,
)

#: Held-out products (not in the search catalog) uploaded by these tests.
UPLOADS = 80


@pytest.fixture(scope="module")
def held_out(search_settings: Settings) -> list[DatasetItem]:
    """Dataset rows after the search catalog's: products the catalog has never seen."""
    return list(iter_dataset(search_settings.dataset_source, offset=SEARCH_ROWS, limit=UPLOADS))


@pytest.fixture(scope="module")
def ingest_settings(search_settings: Settings) -> Settings:
    """The search catalog with its own output/dead-letter topics, consumer group and model
    server port (the tests stop that server), and quick retries."""
    from tests.helpers import free_port

    s3 = {row.role: row for row in status(search_settings)}["s3"]
    if s3.fallback:
        pytest.skip("the S3 fallback (moto) sends no bucket notifications to Kafka")
    run = uuid.uuid4().hex[:6]
    port = free_port()
    settings = search_settings.replace(
        database=database(search_settings, f"{search_settings.database.name}_ingest"),
        kafka={
            "output_topic": f"test-{run}.products",
            "dead_letter_topic": f"test-{run}.dead-letter",
        },
        model_server={"port": port, "address": f"127.0.0.1:{port}"},
        telemetry={"metrics_port": free_port()},  # the dispatcher's
        ingest={
            "group_id": f"test-ingest-{run}",
            "batch_size": 4,  # many batches, so a kill lands mid-stream
            "retry_budget_s": 20.0,
            "retry_base_s": 0.25,
            "retry_max_s": 4.0,
        },
    )
    ensure_topics(settings, (settings.kafka.output_topic, settings.kafka.dead_letter_topic))
    announce_uploads(ObjectStore(settings), settings.storage.uploads_bucket)
    _start_group_at_end(settings)
    return settings


def _start_group_at_end(settings: Settings) -> None:
    """Commit the new group's offsets at the topic's end, so it sees only this run's uploads."""
    consumer = Consumer(kafka_config(settings, {"group.id": "probe"}))
    partitions = (
        consumer.list_topics(settings.kafka.uploads_topic, timeout=10)
        .topics[settings.kafka.uploads_topic]
        .partitions
    )
    ends = [
        TopicPartition(settings.kafka.uploads_topic, p, consumer.get_watermark_offsets(
            TopicPartition(settings.kafka.uploads_topic, p), timeout=10)[1])
        for p in partitions
    ]  # fmt: skip
    consumer.close()
    admin = AdminClient(kafka_config(settings))
    request = ConsumerGroupTopicPartitions(settings.ingest.group_id, ends)
    for future in admin.alter_consumer_group_offsets([request]).values():
        future.result()


class ModelServer:
    """The ingestion tests' own model server process, which tests stop and start again."""

    def __init__(self, settings: Settings, run_dir: Path) -> None:
        self.settings, self.run_dir = settings, run_dir
        self.process = start_model_server(settings, run_dir)

    def stop(self) -> None:
        self.process.stop()

    def start(self) -> None:
        self.process = start_model_server(self.settings, self.run_dir)


@pytest.fixture(scope="module")
def model_server(
    ingest_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    from tests.helpers import free_port

    server = ModelServer(
        ingest_settings.replace(telemetry={"metrics_port": free_port()}),
        tmp_path_factory.mktemp("ingest-model-server"),
    )
    yield server
    server.stop()


def _start_dispatcher(settings: Settings, run_dir: Path) -> ManagedProcess:
    return start_process(
        "dispatcher", ["-m", "functions.events", "kafka"], settings, run_dir,
        lambda: group_has_member(settings, settings.ingest.group_id),
        timeout_s=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def dispatcher(
    ingest_settings: Settings,
    ingest_pool: ConnectionPool,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[ManagedProcess]]:
    """The Kafka dispatcher as a real process; a list so that a test can replace it."""
    run_dir = tmp_path_factory.mktemp("dispatcher")
    processes = [_start_dispatcher(ingest_settings, run_dir)]
    yield processes
    processes[-1].stop()


class Outputs:
    """Reads the run's output and dead-letter topics from the start."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = Consumer(
            kafka_config(
                settings,
                {
                    "group.id": f"reader-{uuid.uuid4().hex}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                },
            )
        )
        self.consumer.subscribe([settings.kafka.output_topic, settings.kafka.dead_letter_topic])
        self.processed: list[dict[str, Any]] = []
        self.dead_letters: list[dict[str, Any]] = []

    def wait(self, done: Callable[[Outputs], bool], timeout_s: float = 120) -> None:
        """Read until ``done(self)``; AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not done(self):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out: {len(self.processed)} processed, {self.dead_letters}"
                )
            message = self.consumer.poll(0.5)
            if message is None or message.error():
                continue
            value = json.loads(message.value() or b"null")
            target = (
                self.processed
                if message.topic() == self.settings.kafka.output_topic
                else self.dead_letters
            )
            target.append(value)

    def drain(self, seconds: float) -> None:
        """Read whatever arrives during ``seconds``."""
        deadline = time.monotonic() + seconds
        self.wait(lambda o: time.monotonic() > deadline, timeout_s=seconds + 5)

    def for_prefix(self, prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Processed and dead-letter messages whose key starts with ``prefix``."""
        return (
            [m for m in self.processed if m["key"].startswith(prefix)],
            [m for m in self.dead_letters if (m.get("key") or "").startswith(prefix)],
        )

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture(scope="module")
def outputs(ingest_settings: Settings) -> Iterator[Outputs]:
    reader = Outputs(ingest_settings)
    yield reader
    reader.close()


def _keys_done(prefix: str, keys: set[str], dead: int = 0) -> Callable[[Outputs], bool]:
    def done(o: Outputs) -> bool:
        processed, dead_letters = o.for_prefix(prefix)
        return {m["key"] for m in processed} >= keys and len(dead_letters) >= dead

    return done


def _rows(pool: ConnectionPool, bucket: str, prefix: str) -> list[tuple[Any, ...]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT id, source_key, source_etag, master_category, article_type, base_colour,"
            " (SELECT string_agg(model_version, ',') FROM product_embeddings"
            "  WHERE product_id = p.id),"
            " EXISTS (SELECT 1 FROM product_embeddings WHERE product_id = p.id),"
            " image_key, label_confidence FROM products p"
            " WHERE source_bucket = %s AND source_key LIKE %s ORDER BY source_key",
            (bucket, prefix + "%"),
        ).fetchall()


@pytest.fixture(scope="module")
def ingest_pool(ingest_settings: Settings, model_server: ModelServer) -> Iterator[ConnectionPool]:
    """The ingestion tests' own catalog (the search catalog's products), which they grow."""
    with catalog_database(ingest_settings, SEARCH_ROWS), create_pool(ingest_settings) as pool:
        yield pool


def _upload(
    store: ObjectStore, bucket: str, items: list[DatasetItem], prefix: str
) -> dict[str, DatasetItem]:
    keys = {f"{prefix}{item.fields.id}.jpg": item for item in items}
    store.put_many(bucket, [(key, item.image) for key, item in keys.items()])
    return keys


def test_fifty_uploads_become_classified_searchable_products(
    ingest_settings: Settings, dispatcher: list[ManagedProcess], outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem],
) -> None:  # fmt: skip
    store = ObjectStore(ingest_settings)
    prefix = f"fifty/{uuid.uuid4().hex[:6]}/"
    uploaded = _upload(store, ingest_settings.storage.uploads_bucket, held_out[:50], prefix)

    outputs.wait(_keys_done(prefix, set(uploaded)))
    processed, dead_letters = outputs.for_prefix(prefix)
    assert len(processed) == 50 and not dead_letters
    rows = _rows(ingest_pool, ingest_settings.storage.uploads_bucket, prefix)
    assert len(rows) == 50
    catalog = Catalog.of(ingest_pool)
    vocabulary = catalog.products.facets()
    for message in processed:
        assert message["status"] == "created"
        assert message["bucket"] == ingest_settings.storage.uploads_bucket and message["eTag"]
        [result] = message["results"]
        assert (
            result["s3_path"] == f"s3://{ingest_settings.storage.uploads_bucket}/{message['key']}"
        )
        assert result["filename"] == message["key"].rsplit("/", 1)[-1]
        assert result["articleType"] in vocabulary["articleType"]
        assert result["baseColour"] in vocabulary["baseColour"]
        assert set(result["confidence"]) >= {
            "masterCategory",
            "subCategory",
            "articleType",
            "baseColour",
        }
        assert all(0 < c <= 1 for c in result["confidence"].values())
        serving = catalog.versions.serving()
        product = catalog.products.get(result["id"], serving)
        assert product.dataset == "uploads" and product.article_type == result["articleType"]
        # searchable: its own embedding finds it first, and its image is in the images bucket
        assert product.embedding is not None
        assert (
            catalog.vectors.nearest(serving, product.embedding, k=1).neighbors[0].product.id
            == product.id
        )
        assert store.exists(ingest_settings.storage.images_bucket, product.image_key)
    correct = sum(
        m["results"][0]["masterCategory"] == uploaded[m["key"]].fields.master_category
        for m in processed
    )
    print(f"masterCategory accuracy of the 1-epoch test model on 50 uploads: {correct / 50:.2f}")


def test_uploads_of_catalog_photos_take_their_products_labels(
    ingest_settings: Settings, dispatcher: list[ManagedProcess], outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem],
) -> None:  # fmt: skip
    """A catalog photo uploaded again (byte for byte) is a duplicate of its product: it takes
    that product's labels at confidence 1. A re-encoded copy and a photo the catalog lacks
    are labelled by the rule (a duplicate's labels when the nearest labelled product is at
    least FS_INGEST_DUPLICATE_SIMILARITY similar, else the vote), whatever the labels are."""
    import io

    from PIL import Image

    from fashion_search.ingest.classify import PREDICTED_LABELS, predict_labels

    catalog_items = list(iter_dataset(ingest_settings.dataset_source, limit=SEARCH_ROWS))
    counts: dict[bytes, int] = {}
    for item in catalog_items:
        counts[item.image] = counts.get(item.image, 0) + 1
    unique = [i for i in catalog_items if counts[i.image] == 1][:: SEARCH_ROWS // 20][:4]

    def reencoded(data: bytes) -> bytes:
        out = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").save(out, "JPEG", quality=60)
        return out.getvalue()

    prefix = f"labels/{uuid.uuid4().hex[:6]}/"
    objects = {f"{prefix}exact-{i.fields.id}.jpg": (i, i.image) for i in unique}
    objects |= {f"{prefix}jpeg-{i.fields.id}.jpg": (i, reencoded(i.image)) for i in unique}
    objects |= {f"{prefix}new-{i.fields.id}.jpg": (i, i.image) for i in held_out[-4:]}
    store = ObjectStore(ingest_settings)
    store.put_many(ingest_settings.storage.uploads_bucket,
                   [(key, data) for key, (_, data) in objects.items()])  # fmt: skip
    outputs.wait(_keys_done(prefix, set(objects)))
    processed, _ = outputs.for_prefix(prefix)
    catalog = Catalog.of(ingest_pool)
    serving = catalog.versions.serving()
    rule = ingest_settings.ingest.label_rule
    for message in processed:
        [result] = message["results"]
        item, _ = objects[message["key"]]
        labels = {name: result[to_camel(name)] for name in PREDICTED_LABELS}
        if "/exact-" in message["key"]:
            assert labels == {name: getattr(item.fields, name) for name in PREDICTED_LABELS}
            assert set(result["confidence"].values()) == {1.0}
            continue
        product = catalog.products.get(result["id"], serving)
        near = catalog.vectors.labelled_neighbours(
            serving, [product.embedding], ingest_settings.ingest.neighbours
        )[0]
        expected = predict_labels(near, rule)
        assert labels == {name: p.value for name, p in expected.items()}
        duplicate = near[0].score >= rule.duplicate_similarity
        assert (set(result["confidence"].values()) == {1.0}) >= duplicate


def test_the_same_object_twice_makes_one_product_and_a_new_version_updates_it(
    ingest_settings: Settings, dispatcher: list[ManagedProcess], outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem],
) -> None:  # fmt: skip
    store = ObjectStore(ingest_settings)
    bucket = ingest_settings.storage.uploads_bucket
    prefix = f"twice/{uuid.uuid4().hex[:6]}/"
    key = f"{prefix}photo.jpg"
    first = store.put(bucket, key, held_out[50].image)
    outputs.wait(lambda o: len(o.for_prefix(prefix)[0]) >= 1)
    assert store.put(bucket, key, held_out[50].image) == first  # same bytes, same ETag
    outputs.wait(lambda o: len(o.for_prefix(prefix)[0]) >= 2)
    second = store.put(bucket, key, held_out[51].image)
    outputs.wait(lambda o: len(o.for_prefix(prefix)[0]) >= 3)

    statuses = [(m["status"], m["eTag"]) for m in outputs.for_prefix(prefix)[0]]
    assert statuses == [("created", first), ("duplicate", first), ("updated", second)]
    ids = {m["results"][0]["id"] for m in outputs.for_prefix(prefix)[0]}
    rows = _rows(ingest_pool, bucket, prefix)
    assert len(ids) == 1 and len(rows) == 1 and rows[0][2] == second


def test_each_upload_is_announced_twice_and_processed_once(
    ingest_settings: Settings, dispatcher: list[ManagedProcess], outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem],
) -> None:  # fmt: skip
    """MinIO announces an upload through both its targets (at once, and from its disk queue
    at the next replay, every 3 s); the dispatcher processes the first copy and drops the
    second, so each upload has one output message."""
    store = ObjectStore(ingest_settings)
    bucket = ingest_settings.storage.uploads_bucket
    prefix = f"copies/{uuid.uuid4().hex[:6]}/"
    uploaded = _upload(store, bucket, held_out[57:62], prefix)

    outputs.wait(_keys_done(prefix, set(uploaded)))
    outputs.drain(4)  # past MinIO's next replay of its queue: a second output would come now
    processed, dead_letters = outputs.for_prefix(prefix)
    assert sorted(m["key"] for m in processed) == sorted(uploaded) and not dead_letters
    assert {m["status"] for m in processed} == {"created"}
    announced = _announced(ingest_settings, f"{bucket}/{prefix}", len(uploaded) * 2)
    assert sorted(announced) == sorted(2 * [f"{bucket}/{key}" for key in uploaded])


def _announced(settings: Settings, prefix: str, count: int) -> list[str]:
    """The keys of the uploads topic's messages that start with ``prefix``, read from the
    start until ``count`` of them are found (or 10 s pass without one)."""
    consumer = Consumer(
        kafka_config(
            settings, {"group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([settings.kafka.uploads_topic])
    keys: list[str] = []
    deadline = time.monotonic() + 10
    try:
        while len(keys) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            key = (message.key() or b"").decode()
            if key.startswith(prefix):
                keys.append(key)
                deadline = time.monotonic() + 10
    finally:
        consumer.close()
    return keys


def test_the_image_copy_has_the_decoded_type_not_the_uploaders(
    ingest_settings: Settings, dispatcher: list[ManagedProcess], outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem],
) -> None:  # fmt: skip
    """A JPEG uploaded as text/html (a browser opening its presigned URL would render it) is
    served from the images bucket as image/jpeg."""
    store = ObjectStore(ingest_settings)
    bucket = ingest_settings.storage.uploads_bucket
    prefix = f"typed/{uuid.uuid4().hex[:6]}/"
    store.put(bucket, f"{prefix}page.html", held_out[52].image, content_type="text/html")
    outputs.wait(lambda o: len(o.for_prefix(prefix)[0]) >= 1)
    [message] = outputs.for_prefix(prefix)[0]
    assert message["status"] == "created"
    [row] = _rows(ingest_pool, bucket, prefix)
    copy = store.read(ingest_settings.storage.images_bucket, row[8])
    assert copy.content_type == "image/jpeg" and copy.data == held_out[52].image


def test_a_deleted_upload_leaves_the_catalog_at_its_removal_event(
    ingest_settings: Settings, dispatcher: list[ManagedProcess], outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem],
) -> None:  # fmt: skip
    store = ObjectStore(ingest_settings)
    bucket = ingest_settings.storage.uploads_bucket
    prefix = f"deleted/{uuid.uuid4().hex[:6]}/"
    kept, gone = f"{prefix}kept.jpg", f"{prefix}gone.jpg"
    store.put(bucket, kept, held_out[52].image)
    store.put(bucket, gone, held_out[53].image)
    outputs.wait(_keys_done(prefix, {kept, gone}))
    [made] = [m for m in outputs.for_prefix(prefix)[0] if m["key"] == gone]
    product_id = made["results"][0]["id"]
    store.client.delete_object(Bucket=bucket, Key=gone)
    outputs.wait(lambda o: any(m["status"] == "removed" for m in o.for_prefix(prefix)[0]))

    [removed] = [m for m in outputs.for_prefix(prefix)[0] if m["status"] == "removed"]
    assert removed["key"] == gone and removed["results"][0]["id"] == product_id
    assert [r[1] for r in _rows(ingest_pool, bucket, prefix)] == [kept]  # the other one stays
    catalog = Catalog.of(ingest_pool)
    with pytest.raises(ProductNotFoundError):
        catalog.products.get(product_id)
    serving = catalog.versions.serving()
    with ingest_pool.connection() as conn:  # its embeddings went with it
        assert conn.execute(
            "SELECT count(*) FROM product_embeddings WHERE product_id = %s", (product_id,)
        ).fetchone() == (0,)
    with EmbeddingClient(ingest_settings.model_server.address) as client:
        vector = client.embed_images([held_out[53].image], serving.model_version).vectors[0]
    assert product_id not in {
        n.product.id for n in catalog.vectors.nearest(serving, vector, 5).neighbors
    }


def test_a_corrupt_file_among_good_ones_is_dead_lettered_alone(
    ingest_settings: Settings, dispatcher: list[ManagedProcess], outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem], model_server: ModelServer,
) -> None:  # fmt: skip
    """... and the dispatcher's and model server's metrics count it."""
    dispatcher_port = ingest_settings.telemetry.metrics_port
    model_port = model_server.settings.telemetry.metrics_port
    before, model_before = scrape(dispatcher_port), scrape(model_port)
    store = ObjectStore(ingest_settings)
    bucket = ingest_settings.storage.uploads_bucket
    prefix = f"corrupt/{uuid.uuid4().hex[:6]}/"
    good = _upload(store, bucket, held_out[52:57], prefix)
    store.put(bucket, f"{prefix}broken.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg")

    outputs.wait(_keys_done(prefix, set(good), dead=1))
    after, model_after = scrape(dispatcher_port), scrape(model_port)

    def moved(before: dict[str, float], after: dict[str, float], key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved(before, after, 'fashion_search_ingest_processed_total{status="created"}') == 5
    reason = 'fashion_search_ingest_dead_letters_total{reason="not-an-image"}'
    assert moved(before, after, reason) == 1
    assert 'fashion_search_ingest_consumer_lag{partition="0"}' in after
    images = moved(model_before, model_after, 'fashion_search_model_batch_size_sum{tower="image"}')
    assert images >= 5  # the five good photos (and any other test's still arriving)
    calls = 'fashion_search_model_inference_seconds_count{tower="image"}'
    assert moved(model_before, model_after, calls) >= 1
    champion = ingest_settings.registry.model_alias
    assert any(
        k.startswith(f'fashion_search_model_serving{{alias="{champion}"') and v == 1
        for k, v in model_after.items()
    )
    processed, dead_letters = outputs.for_prefix(prefix)
    assert {m["key"] for m in processed} == set(good)
    [letter] = dead_letters
    assert letter["reason"] == "not-an-image" and letter["key"] == f"{prefix}broken.jpg"
    original = json.loads(letter["originalEvent"])
    assert original["Records"][0]["s3"]["object"]["key"].endswith("broken.jpg")
    assert len(_rows(ingest_pool, bucket, prefix)) == 5


def _members_with_partitions(settings: Settings) -> int:
    admin = AdminClient(kafka_config(settings))
    described = admin.describe_consumer_groups([settings.ingest.group_id])
    group = described[settings.ingest.group_id].result()
    return sum(bool(m.assignment.topic_partitions) for m in group.members)


def test_three_dispatchers_in_one_group_share_300_uploads_without_duplicates(
    ingest_settings: Settings, dispatcher: list[ManagedProcess], outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem], tmp_path: Path,
) -> None:  # fmt: skip
    """Ingestion scales by the uploads topic's partitions: each dispatcher of the group takes
    some, and every upload is processed exactly once."""
    partitions = ingest_settings.kafka.partitions
    assert partitions >= 3
    others = ingest_settings.replace(telemetry={"metrics_port": 0})  # the first one's port
    extra = [_start_dispatcher(others, tmp_path / f"d{i}") for i in (1, 2)]
    try:
        deadline = time.monotonic() + 60
        while _members_with_partitions(ingest_settings) < 3:  # the group settled: 3 members
            assert time.monotonic() < deadline, "the group did not give each member partitions"
            time.sleep(0.5)
        first = scrape(ingest_settings.telemetry.metrics_port)
        store = ObjectStore(ingest_settings)
        bucket = ingest_settings.storage.uploads_bucket
        prefix = f"three/{uuid.uuid4().hex[:6]}/"
        keys = {f"{prefix}{n}.jpg": held_out[n % len(held_out)].image for n in range(300)}
        store.put_many(bucket, list(keys.items()))

        outputs.wait(_keys_done(prefix, set(keys)), timeout_s=300)
        outputs.drain(3)  # a duplicate would arrive now
        processed, dead_letters = outputs.for_prefix(prefix)
        assert not dead_letters
        assert sorted(m["key"] for m in processed) == sorted(keys)  # each once
        assert {m["status"] for m in processed} == {"created"}
        rows = _rows(ingest_pool, bucket, prefix)
        assert len(rows) == 300 and len({r[0] for r in rows}) == 300
        # every dispatcher did part of the work
        created = 'fashion_search_ingest_processed_total{status="created"}'
        assert (
            0
            < scrape(ingest_settings.telemetry.metrics_port)[created] - first.get(created, 0)
            < 300
        )
        assert all("processed" in p.log_file.read_text() for p in extra)
    finally:
        for process in extra:
            process.stop()


def test_a_killed_dispatcher_restarts_without_losing_or_duplicating_events(
    ingest_settings: Settings, dispatcher: list[ManagedProcess], outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem], tmp_path: Path,
) -> None:  # fmt: skip
    store = ObjectStore(ingest_settings)
    bucket = ingest_settings.storage.uploads_bucket
    prefix = f"killed/{uuid.uuid4().hex[:6]}/"
    uploaded = _upload(store, bucket, held_out[57:80], prefix)
    outputs.wait(lambda o: len(o.for_prefix(prefix)[0]) >= 1)
    pid = dispatcher[-1].pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # mid-stream: no clean shutdown, nothing committed after
    outputs.drain(1)
    before_restart = {m["key"] for m in outputs.for_prefix(prefix)[0]}
    assert before_restart < set(uploaded)  # some events were still to be processed
    dispatcher.append(_start_dispatcher(ingest_settings, tmp_path))

    outputs.wait(_keys_done(prefix, set(uploaded)))
    rows = _rows(ingest_pool, bucket, prefix)
    assert sorted(r[1] for r in rows) == sorted(uploaded)  # every event, one row each
    assert not outputs.for_prefix(prefix)[1]

    # SIGTERM: the dispatcher finishes its batch, commits, leaves the group and exits 0.
    process = dispatcher[-1]
    pid = process.pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while process.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.pid() is None and "dispatcher stopped" in process.log_tail()
    dispatcher.append(_start_dispatcher(ingest_settings, tmp_path))


def test_events_wait_for_a_stopped_model_server_and_none_is_lost(
    ingest_settings: Settings, dispatcher: list[ManagedProcess], outputs: Outputs,
    model_server: ModelServer, ingest_pool: ConnectionPool, held_out: list[DatasetItem],
) -> None:  # fmt: skip
    store = ObjectStore(ingest_settings)
    bucket = ingest_settings.storage.uploads_bucket
    prefix = f"server-down/{uuid.uuid4().hex[:6]}/"
    model_server.stop()
    uploaded = _upload(store, bucket, held_out[:5], prefix)
    outputs.drain(4)
    assert not outputs.for_prefix(prefix)[0]  # delayed while the server is down
    model_server.start()
    outputs.wait(_keys_done(prefix, set(uploaded)))
    assert not outputs.for_prefix(prefix)[1]
    assert len(_rows(ingest_pool, bucket, prefix)) == 5


# --- The function invoked directly (in-process) with events that must be dead-lettered --------


@pytest.fixture(scope="module")
def function(
    ingest_settings: Settings, ingest_pool: ConnectionPool, model_server: ModelServer
) -> BucketEventFunction:
    """The bucket-event function in this process, on the ingestion tests' resources."""
    processor = UploadProcessor(
        ingest_settings, Catalog.of(ingest_pool), ObjectStore(ingest_settings),
        EmbeddingClient(ingest_settings.model_server.address),
    )  # fmt: skip
    return BucketEventFunction(processor, KafkaPublisher(ingest_settings))


def _notification(
    bucket: str, key: str, etag: str = "0123abcd", name: str = "s3:ObjectCreated:Put"
) -> dict[str, Any]:
    return {
        "EventName": name,
        "Key": f"{bucket}/{key}",
        "Records": [
            {
                "eventName": name,
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag, "size": 9}},
            }
        ],
    }


def test_the_template_event_of_the_bucket_function_is_handled(
    ingest_settings: Settings, ingest_pool: ConnectionPool, outputs: Outputs,
    held_out: list[DatasetItem],
) -> None:  # fmt: skip
    """``local_invoke`` generates the SQS-wrapped S3 event of template.yaml's trigger (no eTag:
    the version read is processed); the function answers with Lambda's partial batch response.

    The object lies in a bucket of its own, without notifications: in the uploads bucket the
    dispatcher would process it too, and whichever stored it first would report "created".
    """
    import argparse

    from functions.local_invoke import function_spec, generated_event

    bucket, key = f"template-{uuid.uuid4().hex[:6]}", "template/shirt.jpg"
    settings = ingest_settings.replace(storage={"uploads_bucket": bucket})
    store = ObjectStore(settings)
    store.ensure_buckets([bucket])
    client = EmbeddingClient(settings.model_server.address)
    processor = UploadProcessor(settings, Catalog.of(ingest_pool), store, client)
    function = BucketEventFunction(processor, KafkaPublisher(settings))
    try:
        etag = store.put(bucket, key, held_out[2].image)
        spec = function_spec(REPO_ROOT / "template.yaml", "BucketEventFunction")
        event = generated_event(spec, argparse.Namespace(bucket=bucket, key=key))

        assert function(event) == {"batchItemFailures": []}
        outputs.wait(lambda o: bool(_from_bucket(o, bucket)))
        [message] = _from_bucket(outputs, bucket)
        assert message["status"] == "created" and message["eTag"] == etag
        assert function(event) == {"batchItemFailures": []}  # again: the same version
        outputs.wait(lambda o: len(_from_bucket(o, bucket)) == 2)
        assert _from_bucket(outputs, bucket)[1]["status"] == "duplicate"
    finally:
        store.delete_bucket(bucket)


def _from_bucket(outputs: Outputs, bucket: str) -> list[dict[str, Any]]:
    return [m for m in outputs.processed if m["bucket"] == bucket]


def test_an_event_for_an_overwritten_version_is_superseded(
    ingest_settings: Settings, function: BucketEventFunction, outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem],
) -> None:  # fmt: skip
    """An old event arriving after the object changed stores nothing; the new one will (the
    module's dispatcher may already have stored it from the bucket's own event)."""
    bucket = ingest_settings.storage.uploads_bucket
    prefix = f"superseded/{uuid.uuid4().hex[:6]}/"
    store = ObjectStore(ingest_settings)
    old = store.put(bucket, f"{prefix}a.jpg", held_out[3].image)
    store.put(bucket, f"{prefix}a.jpg", held_out[4].image)
    event = json.dumps(_notification(bucket, f"{prefix}a.jpg", old)).encode()

    assert function(_kafka_invocation(event)) == {"superseded": 1}
    outputs.wait(lambda o: bool(o.for_prefix(prefix)[0]))
    [message] = outputs.for_prefix(prefix)[0]
    assert message["status"] == "superseded" and message["results"] == []
    assert all(row[2] != old for row in _rows(ingest_pool, bucket, prefix))


def _kafka_invocation(*values: bytes) -> dict[str, Any]:
    records = [
        {"topic": "uploads", "partition": 0, "offset": i, "timestamp": 0, "key": None, "value": v}
        for i, v in enumerate(values)
    ]
    return kafka_event(records, "test")


def test_bad_events_are_dead_lettered_with_reason_and_original_event(
    ingest_settings: Settings, function: BucketEventFunction, outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem],
) -> None:  # fmt: skip
    bucket = ingest_settings.storage.uploads_bucket
    prefix = f"bad/{uuid.uuid4().hex[:6]}/"
    store = ObjectStore(ingest_settings)
    etag = store.put(bucket, f"{prefix}gone.jpg", held_out[0].image)
    store.client.delete_object(Bucket=bucket, Key=f"{prefix}gone.jpg")  # deleted before processing
    store.put(bucket, f"{prefix}huge.jpg", jpeg(9000, 9000, "white"))
    huge = store.read(bucket, f"{prefix}huge.jpg").etag
    events = [
        json.dumps(_notification(bucket, f"{prefix}gone.jpg", etag)).encode(),
        json.dumps(_notification(bucket, f"{prefix}huge.jpg", huge)).encode(),
        json.dumps(_notification("someone-elses", f"{prefix}theirs.jpg")).encode(),
        b"not json at all",
        json.dumps({"Records": "nope", "Key": f"{bucket}/{prefix}x"}).encode(),
        json.dumps(_notification(bucket, f"{prefix}../escape.jpg")).encode(),
        json.dumps(
            _notification(bucket, f"{prefix}removed.jpg", name="s3:ObjectRemoved:Delete")
        ).encode(),
    ]
    counts = function(_kafka_invocation(*events))

    assert counts == {"dead-letter": 6, "removed": 1}  # a removal of no upload: nothing to remove
    outputs.wait(
        lambda o: (
            sum(
                d["source"].get("topic") == "uploads"
                and d["originalEvent"] in {e.decode() for e in events}
                for d in o.dead_letters
            )
            >= 6
        )
    )
    letters = {
        d["originalEvent"]: d for d in outputs.dead_letters if d["source"].get("topic") == "uploads"
    }
    reasons = [letters[e.decode()]["reason"] for e in events[:6]]
    assert reasons == [
        "object-not-found",
        "too-large",
        "foreign-bucket",
        "malformed-event",
        "malformed-event",
        "malformed-event",
    ]
    assert "pixels" in letters[events[1].decode()]["error"]
    assert letters[events[0].decode()]["key"] == f"{prefix}gone.jpg"
    assert not _rows(ingest_pool, bucket, prefix)


def test_a_model_server_down_past_the_retry_budget_fails_the_batch_and_dead_letters_nothing(
    ingest_settings: Settings, ingest_pool: ConnectionPool, outputs: Outputs,
    held_out: list[DatasetItem],
) -> None:  # fmt: skip
    from tests.helpers import free_port

    # A bucket of its own, which announces nothing: no dispatcher of this module processes the
    # object behind the test's back.
    bucket = f"test-quiet-{uuid.uuid4().hex[:6]}"
    # Each call fails after the client's own retries (about 0.4 s; the waits below are not
    # slept): a budget of 5 s leaves room for the first two backoffs.
    settings = ingest_settings.replace(
        storage={"uploads_bucket": bucket}, ingest={"retry_budget_s": 5.0}
    )
    waits: list[float] = []
    processor = UploadProcessor(
        settings, Catalog.of(ingest_pool), ObjectStore(settings),
        EmbeddingClient(f"127.0.0.1:{free_port()}", timeout_s=2),
    )  # fmt: skip
    function = BucketEventFunction(processor, KafkaPublisher(settings), sleep=waits.append)
    store = ObjectStore(settings)
    store.client.create_bucket(Bucket=bucket)
    try:
        key = f"no-server/{uuid.uuid4().hex[:6]}/a.jpg"
        etag = store.put(bucket, key, held_out[1].image)
        event = json.dumps(_notification(bucket, key, etag)).encode()

        with pytest.raises(ModelServerUnavailableError):  # the Kafka source delivers it again
            function(_kafka_invocation(event))
        assert waits and waits[:2] == [0.25, 0.5]  # backoff inside the budget
        sqs = {"Records": [{"eventSource": "aws:sqs", "messageId": "m-1", "body": event.decode()}]}
        assert function(sqs) == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
        outputs.drain(2)
        assert not [d for d in outputs.dead_letters if d.get("key") == key]
        assert not _rows(ingest_pool, bucket, key)
    finally:
        store.delete_bucket(bucket)


def test_dead_letters_are_listed_and_replayed_idempotently(
    ingest_settings: Settings, ingest_pool: ConnectionPool, outputs: Outputs,
    held_out: list[DatasetItem],
) -> None:  # fmt: skip
    bucket = f"test-quiet-{uuid.uuid4().hex[:6]}"
    settings = ingest_settings.replace(storage={"uploads_bucket": bucket})
    store = ObjectStore(settings)
    store.client.create_bucket(Bucket=bucket)
    key = f"too-large/{uuid.uuid4().hex[:6]}/a.jpg"
    etag = store.put(bucket, key, held_out[1].image)
    event = json.dumps(_notification(bucket, key, etag)).encode()
    strict = settings.replace(model_server={"max_image_bytes": 1000})
    with EmbeddingClient(settings.model_server.address) as client:
        function = BucketEventFunction(
            UploadProcessor(strict, Catalog.of(ingest_pool), store, client),
            KafkaPublisher(strict),
        )
        assert function(_kafka_invocation(event)) == {"dead-letter": 1}
    outputs.wait(lambda o: any(d.get("key") == key for d in o.dead_letters))
    [letter] = [d for d in outputs.dead_letters if d.get("key") == key]
    assert letter["reason"] == "too-large" and letter["originalEvent"] == event.decode()

    # The limit raised again, the dead letter is listed and replayed through the same
    # function: once as a new product, then as a duplicate.
    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "functions.events", "dead-letters", *args,
             "--reason", "too-large", "--since", letter["failedAt"]],
            env=child_env(settings), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    try:
        [line] = [line for line in cli("list").splitlines() if key in line]
        letter_id = line.split()[0]
        assert "replayed 1: created 1" in cli("replay", "--id", letter_id)
        [(source_key, *_)] = [r[1:] for r in _rows(ingest_pool, bucket, key)]
        assert source_key == key
        assert "replayed 1: duplicate 1" in cli("replay", "--id", letter_id)
    finally:
        store.delete_bucket(bucket)


def test_a_poison_message_is_dead_lettered_and_does_not_block_its_partition(
    ingest_settings: Settings,
    outputs: Outputs,
) -> None:
    run = uuid.uuid4().hex[:6]
    settings = ingest_settings.replace(
        kafka={"uploads_topic": f"test-{run}.uploads"},
        ingest={"group_id": f"poison-{run}", "invoke_attempts": 2, "retry_base_s": 0.01},
    )
    ensure_topics(settings, (settings.kafka.uploads_topic,))
    producer = Producer(kafka_config(settings))
    for value in (b"ok-1", b"poison", b"ok-2"):
        producer.produce(settings.kafka.uploads_topic, value, key=b"same-partition")
    producer.flush(10)
    seen: list[bytes] = []
    stop = threading.Event()

    def flaky(event: Mapping[str, Any]) -> None:
        values = [base64.b64decode(r["value"]) for rs in event["records"].values() for r in rs]
        if b"poison" in values:
            raise RuntimeError("cannot handle this one")
        seen.extend(values)
        if b"ok-2" in seen:
            stop.set()

    dispatcher = KafkaDispatcher(settings, flaky, KafkaPublisher(settings))
    thread = threading.Thread(target=dispatcher.run, args=(stop,))
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert seen == [b"ok-1", b"ok-2"]
    outputs.wait(
        lambda o: any(
            d["source"].get("topic") == settings.kafka.uploads_topic for d in o.dead_letters
        )
    )
    [letter] = [
        d for d in outputs.dead_letters if d["source"].get("topic") == settings.kafka.uploads_topic
    ]
    assert letter["reason"] == "function-error" and letter["originalEvent"] == "poison"
    assert "cannot handle this one" in letter["error"]
    committed = Consumer(kafka_config(settings, {"group.id": settings.ingest.group_id}))
    offsets = committed.committed(
        [TopicPartition(settings.kafka.uploads_topic, p) for p in range(settings.kafka.partitions)],
        timeout=10,
    )
    committed.close()
    assert sum(max(tp.offset, 0) for tp in offsets) == 3  # all three committed


def test_a_dispatcher_whose_group_stalls_exits_for_its_supervisor(
    ingest_settings: Settings,
) -> None:
    """A consumer that never gets its partitions back (as after a broker restart in the soak)
    while the group lags behind the topic raises instead of polling nothing for ever."""
    from functions.events.kafka_dispatcher import DispatcherStalledError

    run = uuid.uuid4().hex[:6]
    settings = ingest_settings.replace(
        kafka={"uploads_topic": f"test-{run}.stalled"}, ingest={"group_id": f"stalled-{run}"}
    )
    ensure_topics(settings, (settings.kafka.uploads_topic,))
    producer = Producer(kafka_config(settings))
    producer.produce(settings.kafka.uploads_topic, b"waiting", key=b"k")
    producer.flush(10)
    dispatcher = KafkaDispatcher(settings, lambda event: None, KafkaPublisher(settings))
    dispatcher.stall_s = 1.0

    class NeverJoins:
        """The dispatcher's consumer, except that it never joins the group."""

        def subscribe(self, topics: list[str]) -> None:
            pass

        def __getattr__(self, name: str) -> Any:
            return getattr(consumer, name)

    consumer = dispatcher.consumer
    dispatcher.consumer = NeverJoins()  # type: ignore[assignment]
    with pytest.raises(DispatcherStalledError, match="lags behind"):
        dispatcher.run(threading.Event())


# --- LocalStack: S3 -> SQS -> poller -> the same function --------------------------------------


@pytest.fixture
def localstack_settings(ingest_settings: Settings) -> Settings:
    """The function reading uploads from LocalStack's S3 (buckets made by localstack/init)."""
    stack = Settings()
    return ingest_settings.replace(
        storage={
            "endpoint_url": ingest_settings.ingest.sqs_endpoint_url,
            "uploads_bucket": stack.storage.uploads_bucket,
            "images_bucket": stack.storage.images_bucket,
        },
        ingest={"uploads_queue": stack.ingest.uploads_queue},
    )


def test_localstack_uploads_reach_the_function_through_sqs(
    localstack_settings: Settings, model_server: ModelServer, outputs: Outputs,
    ingest_pool: ConnectionPool, held_out: list[DatasetItem],
) -> None:  # fmt: skip
    settings = localstack_settings
    store = ObjectStore(settings)
    prefix = f"localstack/{uuid.uuid4().hex[:6]}/"
    processor = UploadProcessor(
        settings, Catalog.of(ingest_pool), store,
        EmbeddingClient(settings.model_server.address),
    )  # fmt: skip
    function = BucketEventFunction(processor, KafkaPublisher(settings))
    poller = SqsPoller(settings, function)
    good = _upload(store, settings.storage.uploads_bucket, held_out[60:65], prefix)
    store.put(
        settings.storage.uploads_bucket,
        f"{prefix}{next(iter(good)).rsplit('/', 1)[-1]}",
        held_out[60].image,
    )  # same object again
    store.put(settings.storage.uploads_bucket, f"{prefix}broken.jpg", b"GIF89a broken")

    deadline = time.monotonic() + 90
    while not _keys_done(prefix, set(good), dead=1)(outputs) and time.monotonic() < deadline:
        poller.poll_once()
        outputs.drain(0.2)
    processed, dead_letters = outputs.for_prefix(prefix)
    assert {m["key"] for m in processed} == set(good)
    assert [d["reason"] for d in dead_letters] == ["not-an-image"]
    assert dead_letters[0]["source"]["messageId"]
    rows = _rows(ingest_pool, settings.storage.uploads_bucket, prefix)
    assert sorted(r[1] for r in rows) == sorted(good)  # the re-upload made no second row
    assert all(store.exists(settings.storage.images_bucket, r[8]) for r in rows)


def test_the_sqs_poller_deletes_only_what_the_function_did_not_report_failed(
    localstack_settings: Settings,
) -> None:
    sqs = make_sqs_client(localstack_settings)
    queue = f"test-{uuid.uuid4().hex[:6]}"
    url = sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    try:
        for body in ("a", "b", "c"):
            sqs.send_message(QueueUrl=url, MessageBody=body)
        received: list[str] = []

        def fail_b(event: Mapping[str, Any]) -> dict[str, Any]:
            received.extend(r["body"] for r in event["Records"])
            return {
                "batchItemFailures": [
                    {"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "b"
                ]
            }

        poller = SqsPoller(localstack_settings.replace(ingest={"uploads_queue": queue}), fail_b)
        deadline = time.monotonic() + 30
        while received.count("b") < 2 and time.monotonic() < deadline:
            poller.poll_once()
        assert sorted(set(received)) == ["a", "b", "c"]
        assert received.count("a") == received.count("c") == 1  # deleted after success
        assert received.count("b") >= 2  # visible again after the visibility timeout
    finally:
        sqs.delete_queue(QueueUrl=url)
