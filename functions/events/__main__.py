"""``python -m functions.events kafka|sqs``: run an event source that invokes the bucket-event
function in this process, until SIGTERM or SIGINT (the batch in hand is finished first). The
Kafka dispatcher also relays shoppers' feedback to its topic (:mod:`.feedback_relay`). Its
metrics are on ``FS_METRICS_PORT``; traces go out when an OTLP endpoint is set.
``reconcile`` and ``dead-letters`` repair what the upload path lost (:mod:`.admin`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.feedback import FeedbackRepository
from fashion_search.commands import run
from fashion_search.ingest.publisher import KafkaPublisher
from fashion_search.settings import get_settings
from fashion_search.telemetry.logs import configure_logging
from fashion_search.telemetry.metrics import serve_metrics
from fashion_search.telemetry.tracing import configure_tracing
from functions.events import admin
from functions.events.feedback_relay import FeedbackRelay
from functions.events.kafka_dispatcher import KafkaDispatcher
from functions.events.sqs_poller import SqsPoller
from functions.handlers.bucket_event import handler


def build_parser() -> argparse.ArgumentParser:
    """The command line; each command's function is its ``run`` default."""
    parser = argparse.ArgumentParser(prog="python -m functions.events", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for source in ("kafka", "sqs"):
        commands.add_parser(source, help=f"run the {source} event source").set_defaults(run=_run)
    admin.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    if args.run is not _run:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


def _run(args: argparse.Namespace) -> None:
    """Run the event source ``args.command`` until SIGTERM or SIGINT."""
    settings = get_settings()
    configure_logging(settings)
    configure_tracing("fashion-search-ingest", settings)
    serve_metrics(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def invoke(event: Mapping[str, Any]) -> dict[str, Any]:
        return handler(dict(event), None)

    if args.command == "kafka":
        relay = FeedbackRelay(
            FeedbackRepository(create_pool(settings, wait=False)), KafkaPublisher(settings)
        )
        relaying = threading.Thread(target=relay.run, args=(stop,), name="feedback-relay")
        relaying.start()
        try:
            KafkaDispatcher(settings, invoke, KafkaPublisher(settings)).run(stop)
        finally:
            stop.set()
            relaying.join()
    else:
        SqsPoller(settings, invoke).run(stop)


if __name__ == "__main__":
    sys.exit(main())
