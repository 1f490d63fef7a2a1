"""Which errors are transient, and how long to wait before trying again.

An error is transient when a dependency (PostgreSQL, the object store, Kafka, the model
server) is down, restarting or overloaded: the same work succeeds later. Every other error is
permanent for the input at hand (a malformed event, an object that is not an image). An event
source retries transient errors without giving the event up (:mod:`functions.events`); the API
answers them with 503 and ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from fashion_search.embedding_client import (
    ModelServerUnavailableError,
    ModelVersionNotLoadedError,
)
from fashion_search.errors import (
    DependencyUnavailableError,
    NoServingVersionError,
    ServingVersionChangedError,
    ServingVersionUnavailableError,
)

#: The project's own errors that mean "not now": a dependency did not answer, the model server
#: is down, overloaded or still loading the version asked for, the serving version switches.
_TRANSIENT_OWN: tuple[type[Exception], ...] = (
    DependencyUnavailableError,
    ModelServerUnavailableError,
    ModelVersionNotLoadedError,
    NoServingVersionError,
    ServingVersionChangedError,
    ServingVersionUnavailableError,
)

#: S3 error codes of a store that is starting, throttling or failing inside.
_TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
     "XMinioServerNotInitialized"}
)  # fmt: skip


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from (``raise ... from``), nearest first."""
    current: BaseException | None = error
    for _ in range(16):  # a cause chain is short; a cycle ends here
        if current is None:
            return
        yield current
        current = current.__cause__


def is_transient(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a dependency's, not the input's."""
    return any(_transient(cause) for cause in causes(error))


def backoff(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait after failed try ``attempt`` (1, 2, ...): ``base_s`` doubled per try,
    at most ``max_s``."""
    return min(base_s * 2.0 ** min(attempt - 1, 32), max_s)


def _transient(error: BaseException) -> bool:
    if isinstance(error, _TRANSIENT_OWN):
        return True
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return True  # connection lost or refused, shutdown, pool timeout, deadlock, timeout
    if isinstance(error, ConnectionError | HTTPClientError):
        return True  # the object store does not answer (botocore's own retries are spent)
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _TRANSIENT_S3_CODES or status >= 500
    if type(error).__name__ == "KafkaException":  # confluent_kafka's; the API role installs
        fatal = getattr(error.args[0] if error.args else None, "fatal", None)  # no Kafka client
        return not (callable(fatal) and fatal())
    return isinstance(error, TimeoutError | ConnectionRefusedError | ConnectionResetError)
