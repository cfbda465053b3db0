"""Counts every HTTP response in ``hndsr_requests_total`` and errors in ``hndsr_errors_total``."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics
from ..errors import ERROR_HEADER


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        responder = _Recorder(send)
        try:
            await self.app(scope, receive, responder.send)
        finally:
            metrics.record_response(scope["path"], responder.status, responder.error)


class _Recorder:
    """What one response said: its status and error code (500 if the app ended without answering)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500
        self._code: str | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self._code = Headers(raw=message.get("headers", [])).get(ERROR_HEADER)
        await self._send(message)

    @property
    def error(self) -> str | None:
        return self._code or ("http_error" if self.status >= 400 else None)
