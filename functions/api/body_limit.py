"""Request-body limits: every route reads at most its limit, whatever the client claims.

A declared ``Content-Length`` over the limit is answered 413 before anything is read; a body
streamed without one (chunked) is cut off at the limit with the same 413. So neither a JSON
body nor a multipart upload is ever buffered or spooled past it.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fashion_search.errors import RequestTooLargeError


def _refusal(limit: int) -> JSONResponse:
    return JSONResponse(
        {"detail": f"request body is over this route's limit of {limit} bytes"}, status_code=413
    )


class BodyLimit:
    """Pure ASGI middleware: ``limits`` maps a path to its limit, ``default`` for the others."""

    def __init__(self, app: ASGIApp, default: int, limits: Mapping[str, int]) -> None:
        self.app = app
        self.default = default
        self.limits = dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refusal(limit)(scope, receive, send)
            return
        received, over, answered = 0, False, False

        async def limited() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise RequestTooLargeError(f"request body is over {limit} bytes")
            return message

        async def replaced(message: Message) -> None:
            """Once over the limit, whatever the app answers (a parser may turn the error into
            its own 400), the client gets the 413."""
            nonlocal answered
            if not over:
                await send(message)
            elif not answered:
                answered = True
                await _refusal(limit)(scope, receive, send)

        try:
            await self.app(scope, limited, replaced)
        except RequestTooLargeError:
            if not answered:
                await _refusal(limit)(scope, receive, send)
