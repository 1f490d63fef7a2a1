"""Server-side micro-batching for the threaded gRPC server: concurrent requests are merged into
one model call of up to ``max_batch`` items.

There is no batch worker: the request thread that finds the model idle runs the batch itself,
with every request that queued while the previous batch ran (and, with a non-zero
``max_wait_s``, those arriving within it; 0 by default, so no request waits for company). A
lone request therefore runs on the thread that received it, with no hand-off to another thread
and back (README, Search: the model call of a ViT-B/32 text query 0.3-0.6 ms shorter on 2 cores
than with the ``grpc.aio`` server's worker thread). While a batch runs, the other requests
sleep on events of their own; when it ends, it wakes its own requests and the oldest one still
queued, which runs the next batch (waking every waiting thread instead cost 12-21% of the
texts/s with 64 concurrent requests; README, Search).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from fashion_search.telemetry.metrics import (
    MODEL_BATCH_SIZE,
    MODEL_INFERENCE_SECONDS,
    MODEL_QUEUE_DEPTH,
)

log = logging.getLogger(__name__)
Item = TypeVar("Item")
Array = np.ndarray[Any, np.dtype[np.float32]]
Result = tuple[Array, str]


@dataclass
class _Pending(Generic[Item]):
    items: Sequence[Item]
    queued_at: float = field(default_factory=time.perf_counter)
    result: Result | None = None
    error: BaseException | None = None
    # Set when the request is answered, or when its thread is to run the next batch.
    wake: threading.Event = field(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


class MicroBatcher(Generic[Item]):
    """Runs ``fn(items) -> ([len(items), D], tag)`` on merged batches; each request gets its
    rows and the tag (the model version that computed them). Thread-safe; one batch at a time."""

    def __init__(
        self, name: str, fn: Callable[[list[Item]], Result], max_batch: int, max_wait_s: float
    ) -> None:
        self.name = name
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._arrived = threading.Condition()  # guards the queue; notified when a request queues
        self._queue: deque[_Pending[Item]] = deque()
        self._running = False  # a thread is leading: running batches until its own is done
        self._queue_depth = MODEL_QUEUE_DEPTH.labels(name)
        self._batch_size = MODEL_BATCH_SIZE.labels(name)
        self._inference = MODEL_INFERENCE_SECONDS.labels(name)

    def submit(self, items: Sequence[Item]) -> Result:
        """Embeddings of ``items`` (and the tag), computed with other requests' items; the
        model's exception if its batch failed."""
        pending = _Pending(items)
        with self._arrived:
            self._queue.append(pending)
            self._queue_depth.inc()
            self._arrived.notify()  # a leader waiting for company
            leads, self._running = not self._running, True
        if not leads:
            pending.wake.wait()  # answered, or handed the lead
        if not pending.done:
            self._lead(pending)
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _lead(self, pending: _Pending[Item]) -> None:
        """Run batches, oldest requests first, until ``pending`` is answered; then hand the lead
        to the oldest request still queued."""
        try:
            while not pending.done:
                with self._arrived:
                    batch = self._take()
                self._run(batch)
        finally:
            with self._arrived:
                if self._queue:
                    self._queue[0].wake.set()
                else:
                    self._running = False

    def _take(self) -> list[_Pending[Item]]:
        """The next batch, oldest first (called holding the lock, with a non-empty queue)."""
        batch: list[_Pending[Item]] = []
        size = 0
        deadline = time.monotonic() + self.max_wait_s
        while True:
            while self._queue and (not batch or size + len(self._queue[0].items) <= self.max_batch):
                batch.append(self._queue.popleft())
                self._queue_depth.dec()
                size += len(batch[-1].items)
            timeout = deadline - time.monotonic()
            if size >= self.max_batch or timeout <= 0:
                return batch
            self._arrived.wait(timeout)  # a part-full batch waits a little for company

    def _run(self, batch: list[_Pending[Item]]) -> None:
        """Run one batch and answer its requests; a failure is the answer of all of them."""
        items = [item for pending in batch for item in pending.items]
        started = time.perf_counter()
        try:
            output, tag = self.fn(items)
            offset = 0
            for pending in batch:
                pending.result = (output[offset : offset + len(pending.items)], tag)
                offset += len(pending.items)
        except BaseException as error:
            for pending in batch:
                pending.error = error
            if not isinstance(error, Exception):
                raise
            return
        finally:
            for pending in batch:
                pending.wake.set()
        seconds = time.perf_counter() - started
        self._batch_size.observe(len(items))
        self._inference.observe(seconds)
        log.info(
            "%s batch: %d items from %d requests, model %.1f ms, oldest waited %.1f ms",
            self.name, len(items), len(batch), seconds * 1000,
            (started - batch[0].queued_at) * 1000,
        )  # fmt: skip
