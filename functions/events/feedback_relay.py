"""Relays shoppers' feedback from the catalog to the feedback topic (a transactional outbox:
the API only inserts rows; each row is produced once it is committed, and marked published
once Kafka has acknowledged it, so a record is never lost and a crash at worst sends it again).
Runs in the dispatcher's process, beside the upload dispatch."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from fashion_search.catalog.feedback import FeedbackRepository
from fashion_search.faults import is_transient
from fashion_search.ingest.publisher import KafkaPublisher
from fashion_search.learning.feedback import FeedbackRecord

log = logging.getLogger(__name__)


class FeedbackRelay:
    """Moves unpublished feedback rows to Kafka, ``batch`` at a time, every ``interval_s``
    while there is nothing to move."""

    def __init__(
        self,
        feedback: FeedbackRepository,
        publisher: KafkaPublisher,
        interval_s: float = 1.0,
        batch: int = 500,
    ) -> None:
        self.feedback = feedback
        self.publisher = publisher
        self.interval_s = interval_s
        self.batch = batch

    def relay_once(self) -> int:
        """Relay what is waiting (at most ``batch``); returns how many were published."""

        def publish(records: Sequence[FeedbackRecord]) -> None:
            for record in records:
                self.publisher.feedback(record)
            self.publisher.flush()  # PublishError: nothing is marked, the rows wait

        return self.feedback.relay(publish, self.batch)

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set; a failure is logged and tried again (the upload dispatch
        beside it goes on)."""
        while not stop.is_set():
            try:
                moved = self.relay_once()
            except Exception as error:  # the thread must outlive any one failure
                if is_transient(error):
                    log.warning("feedback relay: %s; trying again", error)
                else:
                    log.exception("feedback relay failed; trying again")
                moved = 0
            if moved < self.batch:
                stop.wait(self.interval_s)
