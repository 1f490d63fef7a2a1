"""``upload``: images into the uploads bucket, then their output messages awaited on Kafka
(reconciliation and dead letters are the ingest role's: ``python -m functions.events``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fashion_search.settings import get_settings
from fashion_search.storage import ObjectStore


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``upload`` command."""
    p = commands.add_parser(
        "upload", help="put images into the uploads bucket and print their output messages"
    )
    p.add_argument("files", nargs="+", help="image files")
    p.add_argument("--prefix", default="incoming", help="key prefix in the uploads bucket")
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for the output")
    p.set_defaults(run=_upload)


def _upload(args: argparse.Namespace) -> None:
    from confluent_kafka import Consumer

    from fashion_search.ingest.publisher import kafka_config

    settings = get_settings()
    consumer = Consumer(
        kafka_config(
            settings,
            {
                "group.id": f"upload-cli-{time.time_ns()}",
                "auto.offset.reset": "latest",
                "log_level": 4,
            },
        )
    )
    consumer.subscribe([settings.kafka.output_topic, settings.kafka.dead_letter_topic])
    consumer.poll(1.0)  # join the group before uploading, so no message is missed
    store = ObjectStore(settings)
    pending = {}
    for path in map(Path, args.files):
        key = f"{args.prefix.strip('/')}/{path.name}"
        pending[key] = store.put(settings.storage.uploads_bucket, key, path.read_bytes())
        print(f"uploaded s3://{settings.storage.uploads_bucket}/{key} (eTag {pending[key]})")
    deadline = time.monotonic() + args.wait
    while pending and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        value = json.loads(message.value() or b"{}")
        if value.get("key") in pending and pending[value["key"]] == value.get("eTag"):
            del pending[value["key"]]
            print(json.dumps(value, indent=2))
    consumer.close()
    if pending:
        raise SystemExit(f"no output for {sorted(pending)} within {args.wait} s (dispatcher up?)")
