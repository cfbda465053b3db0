"""Gives BentoML's own error answers on the inference routes the service's envelope.

BentoML answers a request that fails its input validation with 400 and a body of its own; the contract says
422 with ``{"error", "detail"}`` (:func:`~hndsr_service.errors.foreign_error`). Only error responses without
``X-Error-Code`` are buffered (they are small); everything else streams through.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ERROR_HEADER, foreign_error, send_error
from .scope import is_inference


class ErrorEnvelopeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_inference(scope):
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _Rewriter(send).send)


class _Rewriter:
    """Passes the app's answer through, unless it is an error of BentoML's: that one is collected and rewritten."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status: int | None = None  # set while a foreign error is being collected
        self.body = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            own = ERROR_HEADER in Headers(raw=message.get("headers", []))
            if message["status"] < 400 or own:
                await self._send(message)
            else:
                self.status = message["status"]
        elif self.status is not None:
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                await send_error(self._send, foreign_error(self.status, self.body))
        else:
            await self._send(message)
