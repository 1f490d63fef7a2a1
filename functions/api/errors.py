"""The project's typed errors as HTTP responses: ``{"detail": message}`` with a 4xx/5xx code."""

from __future__ import annotations

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fashion_search.embedding_client import EmbeddingRequestError, ModelServerUnavailableError
from fashion_search.errors import (
    EmbeddingDimensionError,
    FashionSearchError,
    ImageTooLargeError,
    InvalidImageError,
    NoServingVersionError,
    ObjectNotFoundError,
    ProductNotEmbeddedError,
    ProductNotFoundError,
    ServingVersionUnavailableError,
)

_STATUS: tuple[tuple[type[FashionSearchError], int], ...] = (
    (ProductNotFoundError, 404),
    (ObjectNotFoundError, 404),
    (ProductNotEmbeddedError, 409),
    (ImageTooLargeError, 413),
    (InvalidImageError, 422),
    (ModelServerUnavailableError, 503),
    (ServingVersionUnavailableError, 503),
    (NoServingVersionError, 503),
    (EmbeddingDimensionError, 503),  # catalog and served model disagree: a deployment problem
)


def status_of(error: FashionSearchError) -> int:
    """HTTP status for a typed error; anything else the caller sent is a 400."""
    if isinstance(error, EmbeddingRequestError):
        return 413 if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED else 422
    return next((status for kind, status in _STATUS if isinstance(error, kind)), 400)


#: Seconds a 503 (a dependency down or overloaded) tells the caller to wait before retrying.
RETRY_AFTER_S = 1


async def _handle(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, FashionSearchError)
    status = status_of(error)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer typed errors with their status and message."""
    app.add_exception_handler(FashionSearchError, _handle)
