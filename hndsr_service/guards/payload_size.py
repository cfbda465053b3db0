"""413 for a body over its route's limit (``MAX_PAYLOAD_MB``; ``MAX_JOB_UPLOAD_MB`` for scene uploads to ``/jobs``):
by ``Content-Length`` before the body is read, else counted as it streams and cut at the limit."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ServiceError, send_error
from ..settings import Settings
from .cut import CutBody
from .scope import may_have_body

BAD_LENGTH = ServiceError(400, "malformed_request", "Content-Length is not a number")  # what the HTTP server says


def too_large(limit: int) -> ServiceError:
    return ServiceError(413, "payload_too_large", f"request body exceeds {limit / 2**20:g} MB")


class PayloadSizeMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.default_limit = settings.max_payload_bytes
        self.limits = {"/jobs": settings.max_job_upload_bytes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not may_have_body(scope):
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_limit)
        length = Headers(scope=scope).get("content-length")
        if length is None:
            cut = CutBody(send)
            await cut.run(self.app, scope, _Counter(receive, cut, limit).receive)
        elif not length.isdigit():
            await send_error(send, BAD_LENGTH)
        elif int(length) > limit:
            await send_error(send, too_large(limit))
        else:
            await self.app(scope, receive, send)


class _Counter:
    """Counts the body as the app reads it; past ``limit`` the client gets 413 and the app is stopped."""

    def __init__(self, receive: Receive, cut: CutBody, limit: int) -> None:
        self._receive = receive
        self.cut = cut
        self.limit = limit
        self.received = 0

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                await self.cut.stop(too_large(self.limit))
        return message
