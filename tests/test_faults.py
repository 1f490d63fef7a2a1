"""Faults injected into the real stack while uploads flow (MinIO -> Kafka -> dispatcher ->
function -> catalog): PostgreSQL, MinIO or Kafka stopped, a dispatcher killed during a
rebalance, one key written three times, deletions, and the reconciliation that mends lost
events. Each test ends with the catalog holding exactly the expected (key, ETag) pairs, one row
each, and no dead letter for a transient fault.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fashion_search.dataset import DatasetItem, iter_dataset
from fashion_search.ingest.events import ObjectCreated
from fashion_search.ingest.processor import upload_image_key
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore
from stack.faults import stopped, uploaded_versions
from stack.orchestrator import status
from stack.process import ManagedProcess
from stack.s3 import announce_uploads
from stack.topics import ensure_topics, group_has_member
from tests.conftest import SEARCH_ROWS, catalog_database
from tests.helpers import database, start_process
from tests.test_ingest import Outputs, _start_group_at_end

#: Uploads made across each outage.
UPLOADS = 200
#: How long PostgreSQL and MinIO stay down: longer than any retry budget of the function.
OUTAGE_S = 90.0
#: How soon after PostgreSQL is back the dispatcher stores uploads again.
RECOVERY_S = 5.0


@pytest.fixture(scope="module")
def faults_settings(search_settings: Settings) -> Iterator[Settings]:
    """The search catalog in a database of its own, an uploads bucket announced on Kafka, its
    own output/dead-letter topics and consumer group, a short retry budget (so that outages
    outlast it many times), and batches of 16."""
    rows = {row.role: row for row in status(search_settings)}
    if rows["s3"].fallback or rows["kafka"].fallback:
        pytest.skip("fault tests need MinIO's notifications and a Kafka broker to stop")
    run = uuid.uuid4().hex[:6]
    settings = search_settings.replace(
        database=database(search_settings, f"{search_settings.database.name}_faults"),
        storage={"uploads_bucket": f"test-{run}-faults"},
        kafka={
            "output_topic": f"test-{run}.faults.products",
            "dead_letter_topic": f"test-{run}.faults.dead-letter",
        },
        ingest={
            "group_id": f"test-faults-{run}",
            "batch_size": 16,
            "retry_budget_s": 5.0,
            "retry_base_s": 0.25,
            "retry_max_s": 2.0,
            "reconcile_min_age_s": 0.0,
        },
    )
    store = ObjectStore(settings)
    store.ensure_buckets([settings.storage.uploads_bucket])
    announce_uploads(store, settings.storage.uploads_bucket)
    ensure_topics(settings, (settings.kafka.output_topic, settings.kafka.dead_letter_topic))
    _start_group_at_end(settings)
    with catalog_database(settings, SEARCH_ROWS):
        yield settings
    store.delete_bucket(settings.storage.uploads_bucket)


@pytest.fixture(scope="module")
def items(search_settings: Settings) -> list[DatasetItem]:
    """Products the catalog has never seen (uploaded under a new prefix by each test)."""
    return list(iter_dataset(search_settings.dataset_source, offset=SEARCH_ROWS, limit=UPLOADS))


def _start_dispatcher(settings: Settings, run_dir: Path, name: str) -> ManagedProcess:
    return start_process(
        name, ["-m", "functions.events", "kafka"], settings, run_dir,
        lambda: group_has_member(settings, settings.ingest.group_id),
        timeout_s=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def dispatchers(
    faults_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ManagedProcess]]:
    """The Kafka dispatcher as a real process; a list so that a test can add or replace."""
    run_dir = tmp_path_factory.mktemp("fault-dispatchers")
    processes = [_start_dispatcher(faults_settings, run_dir, "dispatcher-0")]
    yield processes
    for process in processes:
        process.stop()


@pytest.fixture(scope="module")
def outputs(faults_settings: Settings) -> Iterator[Outputs]:
    reader = Outputs(faults_settings)
    yield reader
    reader.close()


class Uploader(threading.Thread):
    """Puts items under a prefix one after the other, each until the store takes it (it may
    be down); ``etags`` is what the bucket holds when it is done."""

    def __init__(self, store: ObjectStore, bucket: str, items: list[DatasetItem], prefix: str,
                 pause_s: float = 0.05) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.store, self.bucket, self.items, self.prefix = store, bucket, items, prefix
        self.pause_s = pause_s
        self.etags: dict[str, str] = {}
        self.refused = 0

    def run(self) -> None:
        for item in self.items:
            key = f"{self.prefix}{item.fields.id}.jpg"
            while True:
                try:
                    self.etags[key] = self.store.put(self.bucket, key, item.image)
                    break
                except Exception:  # the store is down: a real client tries again
                    self.refused += 1
                    time.sleep(0.5)
            time.sleep(self.pause_s)

    def done(self, timeout_s: float = 600) -> dict[str, str]:
        self.join(timeout_s)
        assert not self.is_alive(), "the uploads did not finish"
        return self.etags


def _assert_catalog_becomes(
    settings: Settings, outputs: Outputs, prefix: str, expected: dict[str, str],
    timeout_s: float = 300, reconcile_after_s: float | None = None,
) -> int:  # fmt: skip
    """Wait until the catalog holds exactly ``expected`` under ``prefix`` (one row a key, the
    bucket's ETag), then check that nothing under it was dead-lettered. With
    ``reconcile_after_s``, once the catalog has not changed for that long, the reconciliation
    runs (as its schedule would) to mend events that were lost; how many it mended."""
    wanted = {key: [etag] for key, etag in expected.items()}
    deadline = time.monotonic() + timeout_s
    found: dict[str, list[str]] = {}
    changed, mended = time.monotonic(), 0
    while time.monotonic() < deadline:
        try:
            now = uploaded_versions(settings, prefix)
        except psycopg.OperationalError:
            now = {}
        if now != found:
            found, changed = now, time.monotonic()
        if found == wanted:
            break
        if reconcile_after_s is not None and time.monotonic() - changed > reconcile_after_s:
            from fashion_search.workflows.uploads import reconcile_uploads
            from functions.events.bucket_event import build_bucket_event_function

            lost = set(expected) - set(found)
            seen = [m for m in outputs.processed + outputs.dead_letters if m.get("key") in lost]
            print(f"reconciling {sorted(lost)}; their messages: {seen}")  # in the test's log
            function = build_bucket_event_function(settings)
            mended = sum(reconcile_uploads(settings, function).outcomes.values())
            reconcile_after_s = None
        outputs.drain(1)
    missing = sorted(set(expected) - set(found))
    assert found == wanted, f"{len(found)} of {len(expected)} in the catalog; missing {missing[:5]}"
    outputs.drain(1)
    assert not outputs.for_prefix(prefix)[1], outputs.for_prefix(prefix)[1][:3]
    return mended


def _outage_mid_stream(
    stack: Settings, settings: Settings, outputs: Outputs, items: list[DatasetItem], role: str,
    dispatcher: ManagedProcess,
) -> int:  # fmt: skip
    """``role`` down for OUTAGE_S in the middle of the uploads, with a backlog of events in
    hand (the dispatcher paused just before), so that it meets the outage; then the catalog
    holds every upload, none dead-lettered, and the dispatcher did wait for ``role``. How
    many uploads the reconciliation mended (see :func:`_assert_catalog_becomes`)."""
    prefix = f"{role}-down/{uuid.uuid4().hex[:6]}/"
    waits_before = dispatcher.log_file.read_text().count(WAITING)
    uploader = Uploader(ObjectStore(settings), settings.storage.uploads_bucket, items, prefix)
    uploader.start()
    pid = dispatcher.pid()
    assert pid is not None
    while len(uploader.etags) < len(items) // 4:
        time.sleep(0.2)
    os.kill(pid, signal.SIGSTOP)  # a backlog builds up
    while len(uploader.etags) < len(items) // 2:
        time.sleep(0.2)
    stored = len(uploaded_versions(settings, prefix))  # the dispatcher is stopped
    with stopped(stack, role):
        os.kill(pid, signal.SIGCONT)
        time.sleep(OUTAGE_S)
    if role == "postgres":  # the backlog flows again within seconds of the database's return
        back = time.monotonic()
        while len(uploaded_versions(settings, prefix)) <= stored:
            assert time.monotonic() - back < RECOVERY_S, "no upload stored since the return"
            time.sleep(0.1)
    mended = _assert_catalog_becomes(
        settings, outputs, prefix, uploader.done(),
        reconcile_after_s=None if role != "s3" else 20.0,
    )  # fmt: skip
    assert dispatcher.pid() == pid  # it waited, it did not die
    assert dispatcher.log_file.read_text().count(WAITING) > waits_before
    return mended


#: What the dispatcher logs while consumption waits for a dependency.
WAITING = "a dependency is down"


def test_postgres_down_longer_than_any_retry_budget_loses_nothing(
    stack_settings: Settings, faults_settings: Settings, dispatchers: list[ManagedProcess],
    outputs: Outputs,
    items: list[DatasetItem],
) -> None:  # fmt: skip
    assert not _outage_mid_stream(
        stack_settings, faults_settings, outputs, items, "postgres", dispatchers[0]
    )


def test_minio_down_longer_than_any_retry_budget_loses_nothing(
    stack_settings: Settings, faults_settings: Settings, dispatchers: list[ManagedProcess],
    outputs: Outputs,
    items: list[DatasetItem],
) -> None:  # fmt: skip
    # A PUT that MinIO took just as it was stopped may have no event (it sends events after
    # answering): the reconciliation mends those few.
    mended = _outage_mid_stream(
        stack_settings, faults_settings, outputs, items, "s3", dispatchers[0]
    )
    assert mended <= len(items) // 20


def test_uploads_made_while_kafka_is_down_all_reach_the_catalog(
    stack_settings: Settings, faults_settings: Settings, dispatchers: list[ManagedProcess],
    outputs: Outputs,
    items: list[DatasetItem],
) -> None:  # fmt: skip
    prefix = f"kafka-down/{uuid.uuid4().hex[:6]}/"
    store = ObjectStore(faults_settings)
    bucket = faults_settings.storage.uploads_bucket
    during: dict[str, str] = {}
    with stopped(stack_settings, "kafka"):
        for item in items[:40]:  # MinIO takes them and queues their events on disk
            key = f"{prefix}{item.fields.id}.jpg"
            during[key] = store.put(bucket, key, item.image)
            time.sleep(0.25)  # 10 s of uploads
    _assert_catalog_becomes(faults_settings, outputs, prefix, during)


def test_a_dispatcher_killed_during_a_rebalance_loses_and_duplicates_nothing(
    faults_settings: Settings, dispatchers: list[ManagedProcess], outputs: Outputs,
    items: list[DatasetItem], tmp_path: Path,
) -> None:  # fmt: skip
    prefix = f"rebalance/{uuid.uuid4().hex[:6]}/"
    uploader = Uploader(
        ObjectStore(faults_settings), faults_settings.storage.uploads_bucket, items[:80], prefix
    )
    uploader.start()
    while len(uploader.etags) < 10:
        time.sleep(0.1)
    second = _start_dispatcher(faults_settings, tmp_path, "dispatcher-1")  # the group rebalances
    time.sleep(2.0)  # while the rebalance is under way
    pid = dispatchers[0].pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the first one dies in the middle of it
    dispatchers.append(second)
    _assert_catalog_becomes(faults_settings, outputs, prefix, uploader.done())


def test_the_last_of_three_quick_writes_of_one_key_wins(
    faults_settings: Settings, dispatchers: list[ManagedProcess], outputs: Outputs,
    items: list[DatasetItem],
) -> None:  # fmt: skip
    store = ObjectStore(faults_settings)
    bucket = faults_settings.storage.uploads_bucket
    prefix = f"thrice/{uuid.uuid4().hex[:6]}/"
    key = f"{prefix}photo.jpg"
    etags = [store.put(bucket, key, item.image) for item in items[:3]]
    assert len(set(etags)) == 3
    _assert_catalog_becomes(faults_settings, outputs, prefix, {key: etags[-1]})
    outputs.drain(3)  # every event of the three is settled by now, in whatever order
    assert uploaded_versions(faults_settings, prefix) == {key: [etags[-1]]}
    image = upload_image_key(ObjectCreated(bucket, key, etags[-1], 0, "ObjectCreated:Put"))
    assert store.get(faults_settings.storage.images_bucket, image) == items[2].image


def test_reconciliation_processes_lost_events_and_removes_deleted_uploads(
    faults_settings: Settings, dispatchers: list[ManagedProcess], outputs: Outputs,
    items: list[DatasetItem],
) -> None:  # fmt: skip
    from fashion_search.workflows.uploads import reconcile_uploads
    from functions.events.bucket_event import build_bucket_event_function

    function = build_bucket_event_function(faults_settings)
    for process in dispatchers:  # no consumer: the events of this test are "lost"
        process.stop()
    store = ObjectStore(faults_settings)
    bucket = faults_settings.storage.uploads_bucket
    try:
        before = uploaded_versions(faults_settings, "")
        prefix = f"reconcile/{uuid.uuid4().hex[:6]}/"
        keys = [f"{prefix}{item.fields.id}.jpg" for item in items[:6]]
        etags = {
            key: store.put(bucket, key, item.image)
            for key, item in zip(keys, items[:6], strict=True)
        }
        store.put(bucket, f"{prefix}broken.jpg", b"not an image")

        first = reconcile_uploads(faults_settings, function)
        assert first.outcomes == {"created": 6, "dead-letter": 1}
        _assert_catalog_has(faults_settings, prefix, etags)

        store.client.delete_object(Bucket=bucket, Key=keys[0])  # its removal event is lost too
        etags[keys[1]] = store.put(bucket, keys[1], items[10].image)  # a new version
        del etags[keys[0]]
        second = reconcile_uploads(faults_settings, function)
        assert second.outcomes == {"removed": 1, "updated": 1}  # the broken one: not again
        _assert_catalog_has(faults_settings, prefix, etags)
        assert reconcile_uploads(faults_settings, function).outcomes == {}
        assert {k: v for k, v in uploaded_versions(faults_settings, "").items() if not k.startswith(
            prefix)} == before  # fmt: skip
    finally:
        dispatchers.append(
            _start_dispatcher(faults_settings, Path(dispatchers[0].pid_file.parent), "dispatcher-2")
        )


def _assert_catalog_has(settings: Settings, prefix: str, etags: dict[str, str]) -> None:
    assert uploaded_versions(settings, prefix) == {key: [etag] for key, etag in etags.items()}
