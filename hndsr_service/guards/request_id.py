"""Gives every request one id, the client's ``X-Request-ID`` when it is usable: in the request's headers for the
layers below, on every response, and in every error envelope (``errors.CURRENT_REQUEST_ID``)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import CURRENT_REQUEST_ID, REQUEST_ID_HEADER, choose_request_id

HEADER = REQUEST_ID_HEADER.encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chosen = choose_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        others = [(name, value) for name, value in scope["headers"] if name.lower() != HEADER]
        scope = {**scope, "headers": [*others, (HEADER, chosen.encode())]}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == HEADER for name, _ in headers):
                    message = {**message, "headers": [*headers, (HEADER, chosen.encode())]}
            await send(message)

        token = CURRENT_REQUEST_ID.set(chosen)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            CURRENT_REQUEST_ID.reset(token)
