"""Errors as HTTP responses, ``{"detail": message}``: the project's typed errors with their
4xx/5xx code, and a dependency's transient fault (:func:`~fashion_search.faults.is_transient`:
PostgreSQL down or its pool exhausted, the object store unreachable, ...) with 503 and
``Retry-After`` instead of a 500. Anything else stays a 500."""

from __future__ import annotations

import logging
import math
from typing import Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from fashion_search.embedding_client import EmbeddingRequestError, ModelServerUnavailableError
from fashion_search.errors import FashionSearchError, RateLimitedError
from fashion_search.faults import causes, is_transient

log = logging.getLogger(__name__)

#: The errors a dependency's client raises, by the dependency named in the 503's message (the
#: API role installs no Kafka client: the API never talks to Kafka).
_DEPENDENCIES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (psycopg.Error, "database"),  # psycopg_pool's PoolTimeout is an OperationalError
    ((BotoCoreError, ClientError), "object store"),
    ((ModelServerUnavailableError, EmbeddingRequestError), "model server"),
)

#: The error answers every route may give, for its OpenAPI description (``{"detail": ...}``).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    # a message; FastAPI's own validation errors give a list of them
                    "properties": {"detail": {"anyOf": [{"type": "string"}, {"type": "array"}]}},
                    "required": ["detail"],
                }
            }
        },
    }
    for status, description in (
        (400, "invalid argument"),
        (422, "a parameter or body that does not validate, or an image that cannot be read"),
        (401, "an API key is needed, or the one sent is unknown or revoked"),
        (403, "the key's scope does not cover this"),
        (404, "not found"),
        (409, "conflict with the catalog's state"),
        (413, "request body or image over its limit"),
        (429, "rate limit exceeded (Retry-After says when to retry)"),
        (503, "a dependency is unavailable or the API is saturated (Retry-After)"),
    )
}

#: Seconds a 503 (a dependency down or overloaded) tells the caller to wait before retrying.
RETRY_AFTER_S = 1


def status_of(error: BaseException) -> int:
    """HTTP status: 503 for a dependency's transient fault (whatever error it was raised
    under); a typed error's own (:attr:`FashionSearchError.http_status`); 500 for anything
    else."""
    if is_transient(error):
        return 503
    return error.http_status if isinstance(error, FashionSearchError) else 500


def detail_of(error: BaseException) -> str:
    """The message for the caller: a typed error's own; for a dependency's error, which one is
    unavailable and its first line."""
    if isinstance(error, FashionSearchError):
        return str(error)
    cause, name = next(
        ((c, name) for c in causes(error) for kind, name in _DEPENDENCIES if isinstance(c, kind)),
        (error, "a dependency"),
    )
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{name} unavailable: {lines[0] if lines else type(cause).__name__}"


def retry_after(status: int, error: BaseException | None = None) -> dict[str, str] | None:
    """The ``Retry-After`` header of a 503 or of a rate limit's 429, else none."""
    if isinstance(error, RateLimitedError):
        return {"Retry-After": str(error.retry_after_s)}
    return {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None


async def _handle(_: Request, error: Exception) -> Response:
    status = status_of(error)
    if status == 500:
        raise error  # not ours to answer: the server error middleware logs it and answers 500
    detail = detail_of(error)
    if status == 503:
        log.warning("503: %s", detail)
    return JSONResponse({"detail": detail}, status_code=status, headers=retry_after(status, error))


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite number as its text (``1e999`` in a body parses as
    infinity, which JSON cannot carry back in the error that names it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


async def _invalid_request(_: Request, error: Exception) -> Response:
    """FastAPI's 422 for a request that does not validate, whatever numbers it sent."""
    assert isinstance(error, RequestValidationError)
    detail = _json_safe(jsonable_encoder(error.errors()))
    return JSONResponse({"detail": detail}, status_code=422)


async def _handle_unexpected(_: Request, error: Exception) -> Response:
    """The last resort (Starlette logs and re-raises the error after it): a transient fault
    raised under another error is still a 503."""
    if status_of(error) == 503:
        return JSONResponse({"detail": detail_of(error)}, status_code=503, headers=retry_after(503))
    return PlainTextResponse("Internal Server Error", status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Answer typed errors with their status and message, and dependency faults with 503."""
    for kind in (FashionSearchError, psycopg.Error, BotoCoreError, ClientError, OSError):
        app.add_exception_handler(kind, _handle)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _handle_unexpected)
