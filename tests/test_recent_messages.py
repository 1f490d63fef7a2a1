"""The dispatcher's memory of settled messages: a second copy is dropped, nothing else is."""

from __future__ import annotations

from confluent_kafka import Message

from functions.events.recent_messages import RecentMessages


def _message(key: bytes, value: bytes, offset: int) -> Message:
    return Message(topic="uploads", partition=0, offset=offset, key=key, value=value)


def test_copies_of_settled_messages_and_within_a_batch_are_dropped() -> None:
    recent = RecentMessages(size=2)
    first = [_message(b"a", b"event-1", 0), _message(b"a", b"event-1", 1)]
    assert [m.offset() for m in recent.new(first)] == [0]
    recent.settled(recent.new(first))
    later = [
        _message(b"a", b"event-1", 2),
        _message(b"a", b"event-2", 3),
        _message(b"b", b"event-1", 4),
    ]
    # the same bytes under another key, or another event of the key, are new
    assert [m.offset() for m in recent.new(later)] == [3, 4]


def test_only_the_last_settled_are_remembered() -> None:
    recent = RecentMessages(size=2)
    for n in range(3):
        recent.settled([_message(b"k", f"event-{n}".encode(), n)])
    again = [_message(b"k", f"event-{n}".encode(), 10 + n) for n in range(3)]
    assert [m.offset() for m in recent.new(again)] == [10]  # event-0 was forgotten
