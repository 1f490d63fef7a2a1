"""The messages a dispatcher settled lately, so that a second copy of one is dropped.

MinIO announces every bucket event through two Kafka targets (one at once, one from its disk
queue about 0-3 s later, decision 0043): two byte-identical messages with the same key, on the
same partition, so the consumer that settled the first sees the second. Dropping it saves an
invocation and keeps one output message per upload. A copy this consumer does not remember
(after a restart or a rebalance) is still safe: the function reports it ``duplicate``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

from confluent_kafka import Message

#: How many settled messages are remembered (about 100 bytes each).
REMEMBERED = 10_000


class RecentMessages:
    """Digests of the last :data:`REMEMBERED` settled messages (key and value)."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._digests: OrderedDict[bytes, None] = OrderedDict()

    def new(self, batch: Iterable[Message]) -> list[Message]:
        """The messages of ``batch`` that are not copies of a settled one or of an earlier
        message of the batch."""
        fresh, digests = [], set()
        for message in batch:
            digest = _digest(message)
            if digest not in self._digests and digest not in digests:
                digests.add(digest)
                fresh.append(message)
        return fresh

    def settled(self, batch: Iterable[Message]) -> None:
        """Remember ``batch`` as settled (processed or dead-lettered)."""
        for message in batch:
            digest = _digest(message)
            self._digests[digest] = None
            self._digests.move_to_end(digest)
        while len(self._digests) > self.size:
            self._digests.popitem(last=False)


def _digest(message: Message) -> bytes:
    hasher = hashlib.blake2b(digest_size=16)
    for part in (message.key() or b"", message.value() or b""):
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.digest()
