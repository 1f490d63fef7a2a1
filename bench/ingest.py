"""Upload ingestion benchmark against the running stack (``make up``: model server, catalog,
dispatcher):

    .venv/bin/python -m bench.ingest --burst 500 --singles 30

Uploads held-out product photos to the uploads bucket and times each one from the start of its
PUT to the arrival of its output-topic message (MinIO -> Kafka -> dispatcher -> function ->
catalog -> Kafka): single uploads one at a time, then a burst uploaded at once (events/s end to
end). The baseline, run in the same process on the same images: the model server's raw image
embedding throughput (batches of 32), so the pipeline's overhead shows as a ratio. The single
uploads run twice: announced by MinIO's queued Kafka target alone (as before decision 0043),
then by both targets (the default). The products
the benchmark made are deleted afterwards (``--keep`` leaves them).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from confluent_kafka import Consumer

from bench.baseline import raw_image_rate
from bench.report import Report, Table, add_markdown_option
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.ingest.publisher import kafka_config
from fashion_search.model.data import in_test_split
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import ObjectStore
from stack.s3 import announce_uploads


class OutputWatcher:
    """Records when each key's output or dead-letter message arrives."""

    def __init__(self, settings: Settings) -> None:
        self.arrived: dict[str, float] = {}
        self.ids: list[int] = []
        self.dead: list[str] = []
        self._stop = threading.Event()
        self._consumer = Consumer(
            kafka_config(
                settings,
                {
                    "group.id": f"bench-{uuid.uuid4().hex}",
                    "auto.offset.reset": "latest",
                    "fetch.wait.max.ms": 10,
                    "log_level": 4,
                },
            )
        )
        self._consumer.subscribe([settings.kafka.output_topic, settings.kafka.dead_letter_topic])
        while not self._consumer.assignment():
            self._consumer.poll(0.2)
        self._output_topic = settings.kafka.output_topic
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is None or message.error():
                continue
            value = json.loads(message.value() or b"{}")
            key = value.get("key")
            if key:
                self.arrived.setdefault(key, time.perf_counter())
                if message.topic() == self._output_topic:
                    self.ids.extend(r["id"] for r in value.get("results", []))
                else:
                    self.dead.append(f"{key}: {value.get('reason')}")

    def wait(self, keys: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(k not in self.arrived for k in keys):
            if time.monotonic() > deadline:
                missing = sum(k not in self.arrived for k in keys)
                raise SystemExit(f"{missing} uploads had no output within {timeout_s} s")
            time.sleep(0.005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", type=int, default=500, help="uploads sent at once")
    parser.add_argument("--singles", type=int, default=30, help="uploads sent one at a time")
    parser.add_argument("--keep", action="store_true", help="keep the products made")
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.ingest")
    settings = get_settings()
    store = ObjectStore(settings)
    images = [
        item.image
        for item in iter_dataset(settings.dataset_source, limit=(args.burst + 2 * args.singles) * 8)
        if in_test_split(item.image)
    ][: args.burst + 2 * args.singles]
    run = uuid.uuid4().hex[:6]

    with EmbeddingClient(settings.model_server.address, timeout_s=120) as client:
        info = client.info()
        raw_rate = raw_image_rate(client, images[: args.burst], 32)

    watcher = OutputWatcher(settings)
    sent: dict[str, float] = {}

    def upload(index: int, prefix: str) -> str:
        key = f"bench/{run}/{prefix}/{index}.jpg"
        sent[key] = time.perf_counter()
        store.put(settings.storage.uploads_bucket, key, images[index])
        return key

    try:
        bucket = settings.storage.uploads_bucket
        queued: list[str] = []
        announce_uploads(store, bucket, targets=("QUEUED",))
        try:
            for i in range(args.singles):
                queued.append(upload(args.burst + i, "queued"))
                watcher.wait(queued[-1:], 60)
        finally:
            announce_uploads(store, bucket)
        singles = []
        for i in range(args.singles):
            singles.append(upload(args.burst + args.singles + i, "single"))
            watcher.wait(singles[-1:], 60)
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as threads:
            burst = list(threads.map(lambda i: upload(i, "burst"), range(args.burst)))
        watcher.wait(burst, 600)
        burst_s = max(watcher.arrived[k] for k in burst) - started
    finally:
        watcher.close()

    def latencies(keys: list[str]) -> list[float]:
        return [(watcher.arrived[k] - sent[k]) * 1000 for k in keys]

    queued_ms, single_ms, burst_ms = latencies(queued), latencies(singles), latencies(burst)
    rate = args.burst / burst_s
    queued_rate, single_rate = 1000 / float(np.mean(queued_ms)), 1000 / float(np.mean(single_ms))
    report.add(info.describe())
    header = ["run", "events/s", "p50 ms", "p95 ms", "ratio"]
    report.add(Table("uploads end to end (PUT to output message)", header, [
        ["model server raw (batches of 32)", f"{raw_rate:.1f}", "", "", 1.0],
        [f"pipeline, {args.singles} single uploads, queued target alone", f"{queued_rate:.1f}",
         f"{np.percentile(queued_ms, 50):.0f}", f"{np.percentile(queued_ms, 95):.0f}",
         queued_rate / raw_rate],
        [f"pipeline, {args.singles} single uploads", f"{single_rate:.1f}",
         f"{np.percentile(single_ms, 50):.0f}", f"{np.percentile(single_ms, 95):.0f}",
         single_rate / raw_rate],
        [f"pipeline, burst of {args.burst}", f"{rate:.1f}",
         f"{np.percentile(burst_ms, 50):.0f}", f"{np.percentile(burst_ms, 95):.0f}",
         rate / raw_rate],
    ]))  # fmt: skip
    if watcher.dead:
        report.add(f"dead letters: {watcher.dead[:5]}")
    report.write_markdown(args.markdown)
    if not args.keep:
        with create_pool(settings) as pool:
            catalog = Catalog.of(pool)
            copies = [p.image_key for p in catalog.products.get_many(sorted(set(watcher.ids)))]
            catalog.products.delete(watcher.ids)
        for bucket, keys in (
            (settings.storage.uploads_bucket, list(sent)),
            (settings.storage.images_bucket, copies),
        ):
            for key in keys:
                store.client.delete_object(Bucket=bucket, Key=key)


if __name__ == "__main__":
    main()
