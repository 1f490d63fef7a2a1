"""The upload path's messages in a compose deployment (output and dead-letter topics), read
inside its network as the owner: Kafka is not published. For the tests and benchmarks that
upload through the deployment."""

from __future__ import annotations

import json
from typing import Any

from fashion_search.settings import REPO_ROOT
from stack.service import run_checked

#: Run in the ``setup`` service (the owner's settings): prints a JSON list of the messages about
#: keys under PREFIX, each with its ``topic`` and Kafka ``timestamp_ms``, once COUNT have come.
_READER = """
import json, time, uuid
from confluent_kafka import Consumer
from fashion_search.ingest.publisher import kafka_config
from fashion_search.settings import get_settings
s = get_settings()
c = Consumer(kafka_config(s, {"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}))
c.subscribe([s.kafka.output_topic, s.kafka.dead_letter_topic])
end, found = time.monotonic() + TIMEOUT, []
while time.monotonic() < end and len(found) < COUNT:
    m = c.poll(1)
    if m is not None and not m.error():
        v = json.loads(m.value())
        if str(v.get("key")).startswith(PREFIX):
            found.append({**v, "topic": m.topic(), "timestamp_ms": m.timestamp()[1]})
print(json.dumps(found))
"""


def upload_messages(
    compose: list[str], prefix: str, count: int, timeout_s: float = 180
) -> list[dict[str, Any]]:
    """The messages about keys under ``prefix``, once ``count`` have come (fewer at the
    timeout); ``compose`` is the argv prefix naming the project."""
    script = f"PREFIX, COUNT, TIMEOUT = {prefix!r}, {count}, {timeout_s}\n{_READER}"
    result = run_checked(
        [*compose, "run", "--rm", "--no-deps", "setup", "python", "-c", script],
        "read the upload path's messages", timeout_s=timeout_s + 120, cwd=REPO_ROOT,
    )  # fmt: skip
    return list(json.loads(result.stdout.strip().splitlines()[-1]))
