"""One request whose body a guard may stop short (too large, too slow)."""

from __future__ import annotations

from typing import NoReturn

import anyio
import anyio.lowlevel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ServiceError, send_error


class CutBody:
    """Runs the app for one request whose body a guard may stop short: the client is answered at once with the
    guard's error and the app is cancelled where it waits for the body, so it neither reads on nor answers.

    Cancelling, rather than handing the app a disconnect, also keeps a traceback per refused body out of the
    log (BentoML logs an API whose body read fails as an exception).
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._started = False
        self._scope = anyio.CancelScope()

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive) -> None:
        with self._scope:
            await app(scope, receive, self.send)

    async def send(self, message: Message) -> None:
        self._started = self._started or message["type"] == "http.response.start"
        await self._send(message)

    async def stop(self, error: ServiceError, close: bool = False) -> NoReturn:
        """Answer ``error`` (``close``: and close the connection), then cancel the app; call it from ``receive``."""
        if not self._started:
            await send_error(self._send, error, close=close)
        self._scope.cancel()
        await anyio.lowlevel.checkpoint()  # the cancellation is raised here, in the app's call to receive
        raise AssertionError("the app went on after it was cancelled")
