"""408 for a request body that stalls, so a slow client cannot hold its place in the queue for ever.

A body is idle while it delivers less than ``body_progress_bytes`` more (and not its end) in
``BODY_IDLE_TIMEOUT_S`` of waiting for it: a client that sends one byte a second is as idle as one that sends
nothing. Only the time spent waiting on the client counts, not the app's own work between reads, and the clock
stops once the body is complete. The 408 closes the connection, as the rest of the body will not be read.

Nothing is reserved for the request meanwhile but its queue place: the inference slot is taken only after
the whole body has arrived and been decoded.
"""

from __future__ import annotations

import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ServiceError
from ..settings import Settings
from .cut import CutBody
from .scope import may_have_body


class BodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.timeout_s = settings.body_idle_timeout_s
        self.progress_bytes = settings.body_progress_bytes
        self.error = ServiceError(408, "body_timeout", f"the request body stalled: less than "
                                  f"{self.progress_bytes // 1024} KiB of it arrived in {self.timeout_s:g} s")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not may_have_body(scope):
            await self.app(scope, receive, send)
            return
        cut = CutBody(send)
        await cut.run(self.app, scope, _IdleWatch(self, receive, cut).receive)


class _IdleWatch:
    """The body's reads for one request, timed until the body is complete."""

    def __init__(self, guard: BodyTimeoutMiddleware, receive: Receive, cut: CutBody) -> None:
        self.guard = guard
        self._receive = receive
        self.cut = cut
        self.complete = False
        self.waited_s = 0.0  # waiting for the body since it last made progress
        self.pending = 0  # bytes received since it last made progress

    async def receive(self) -> Message:
        if self.complete:  # e.g. the app listening for a disconnect while it works: not the body's time
            return await self._receive()
        started = time.monotonic()
        with anyio.move_on_after(self.guard.timeout_s - self.waited_s) as timer:
            message = await self._receive()
        self.waited_s += time.monotonic() - started
        if timer.cancelled_caught:
            await self.cut.stop(self.guard.error, close=True)
        self._progress(message)
        return message

    def _progress(self, message: Message) -> None:
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.complete = True
            return
        self.pending += len(message.get("body", b""))
        if self.pending >= self.guard.progress_bytes:
            self.pending, self.waited_s = 0, 0.0
