"""Gives BentoML's own error answers on the inference routes the service's envelope.

BentoML answers a request that fails its input validation with 400 and a body of its own; the contract says
422 with ``{"error", "detail"}`` (:func:`~hndsr_service.errors.foreign_error`). Only error responses without
``X-Error-Code`` are buffered (they are small); everything else streams through. A client that goes away while
BentoML reads its body makes BentoML answer 500 (its body reader raises): that is the client's 499, not the
server's failure, and is counted so (the load soak met one among 35,000 answers).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ERROR_HEADER, ServiceError, foreign_error, send_error
from .scope import is_inference


class ErrorEnvelopeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_inference(scope):
            await self.app(scope, receive, send)
            return
        rewriter = _Rewriter(send)

        async def watched() -> Message:
            message = await receive()
            rewriter.client_gone |= message["type"] == "http.disconnect"
            return message

        await self.app(scope, watched, rewriter.send)


class _Rewriter:
    """Passes the app's answer through, unless it is an error of BentoML's: that one is collected and rewritten."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status: int | None = None  # set while a foreign error is being collected
        self.body = b""
        self.client_gone = False  # the app was told the client disconnected

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
                await send_error(self._send, self._error())
        else:
            await self._send(message)

    def _error(self) -> ServiceError:
        if self.client_gone and self.status is not None and self.status >= 500:
            return ServiceError(499, "client_closed_request", "the client went away before its request was read")
        return foreign_error(self.status or 500, self.body)
