"""Sheds inference requests with 503 once ``MAX_QUEUE_DEPTH`` are in flight, while the service drains, or
while it has no model to run.

Decided before the body is read. With ``shared`` (``REDIS_URL``) the count is the whole deployment's, kept in
Redis; this process's own count (:class:`~hndsr_service.state.ServiceState`) is the fallback.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from .. import metrics
from ..errors import ServiceError, send_error
from ..ratelimit import Admission, SharedLimits
from ..settings import Settings
from ..state import ServiceState
from .scope import is_inference

RETRY_AFTER_S = 5


class QueueDepthMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, state: ServiceState, shared: SharedLimits | None = None
                 ) -> None:
        self.app = app
        self.limit = settings.max_queue_depth
        self.state = state
        self.shared = shared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_inference(scope):
            await self.app(scope, receive, send)
            return
        refusal = self.state.refusal()
        if refusal is not None:
            await send_error(send, refusal)
            return
        admission = await self._admit()
        if not admission.admitted:
            metrics.BACKPRESSURE_REJECTED.inc()
            await send_error(send, ServiceError(503, "overloaded", f"{admission.depth} requests in flight "
                                                f"(limit {self.limit}); retry later", retry_after=RETRY_AFTER_S))
            return
        try:
            with self.state.request_in_flight():
                await self.app(scope, receive, send)
        finally:
            if self.shared:
                await self.shared.release(admission)

    async def _admit(self) -> Admission:
        local = self.state.in_flight
        if self.shared:
            return await self.shared.acquire(self.limit, local)
        return Admission(local < self.limit, local, shared=False)
