"""Request bodies are cut off at a size limit as they stream in, whether or not they declare a length.

A declared Content-Length over the limit is refused before anything is read; an undeclared
(chunked) body is counted message by message and refused the moment it passes the limit, so no
route ever reads, spools or writes more than the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response

JSON_BODY_LIMIT = 1024 * 1024  # job bodies are a few KiB
MULTIPART_OVERHEAD = 64 * 1024  # the form's boundaries, part headers and purpose field


@dataclass(frozen=True)
class Limit:
    bytes: int
    message: str
    param: str | None = None
    code: str = "request_too_large"


class BodyTooLarge(HTTPException):
    """Raised from `receive` inside a route; rendered as a 413 in OpenAI's error shape."""

    def __init__(self, limit: Limit):
        super().__init__(413, limit.message)
        self.param, self.code = limit.param, limit.code


class BodyLimit:
    """`limit_for(scope)` gives each request's Limit."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], Limit]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit.bytes:
            await error_response(413, limit.message, limit.param, limit.code)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.bytes:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)
