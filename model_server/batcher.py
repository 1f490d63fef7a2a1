"""Server-side micro-batching: concurrent requests are merged into one model call of up to
``max_batch`` items: those that queued while the previous call ran, plus those arriving within
``max_wait_s`` (0 by default: no request waits for company)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

log = logging.getLogger(__name__)
Item = TypeVar("Item")
Array = np.ndarray[Any, np.dtype[np.float32]]


Result = tuple[Array, str]


@dataclass
class _Pending(Generic[Item]):
    items: Sequence[Item]
    future: asyncio.Future[Result]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[Item]):
    """Runs ``fn(items) -> ([len(items), D], tag)`` on merged batches in a worker thread; each
    request gets its rows and the tag (the model version that computed them)."""

    def __init__(
        self, name: str, fn: Callable[[list[Item]], Result], max_batch: int, max_wait_s: float
    ) -> None:
        self.name = name
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending[Item]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker on the running loop."""
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker (pending requests are cancelled)."""
        if self._worker is not None:
            self._worker.cancel()

    async def submit(self, items: Sequence[Item]) -> Result:
        """Embeddings of ``items`` (and the tag), computed with other requests' items."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(items, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch, size = [first], len(first.items)
            # Whatever queued while the previous batch ran joins at once (no added latency)...
            while size < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].items)
            # ...and a non-zero max wait holds a part-full batch a little longer for company.
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                batch.append(nxt)
                size += len(nxt.items)
            items = [item for pending in batch for item in pending.items]
            started = time.perf_counter()
            try:
                output, tag = await asyncio.to_thread(self.fn, items)
            except Exception as error:  # the model failed: every request of the batch learns it
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            ran_ms = (time.perf_counter() - started) * 1000
            offset = 0
            for pending in batch:
                n = len(pending.items)
                if not pending.future.done():
                    pending.future.set_result((output[offset : offset + n], tag))
                offset += n
            log.info(
                "%s batch: %d items from %d requests, model %.1f ms, oldest waited %.1f ms",
                self.name, len(items), len(batch), ran_ms,
                (started - batch[0].queued_at) * 1000,
            )  # fmt: skip
