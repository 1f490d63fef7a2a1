"""Admission control: at most ``limit`` requests in flight; one more is answered 503 with
``Retry-After`` at once instead of queueing for a worker thread, a pooled connection or the
model server behind the others. ``/health`` is exempt, so a probe tells "busy" from "down"."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from functions.api.errors import retry_after

EXEMPT_PATHS = frozenset({"/health"})


class AdmissionLimit:
    """Pure ASGI middleware; the count lives on the event loop, so it needs no lock."""

    def __init__(self, app: ASGIApp, limit: int, exempt: frozenset[str] = EXEMPT_PATHS) -> None:
        if limit < 1:
            raise ValueError(f"the admission limit must be at least 1, got {limit}")
        self.app = app
        self.limit = limit
        self.exempt = exempt
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            detail = (
                f"the API is serving {self.limit} requests at once (FS_API_MAX_IN_FLIGHT);"
                " try again shortly"
            )
            refusal = JSONResponse({"detail": detail}, status_code=503, headers=retry_after(503))
            await refusal(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
