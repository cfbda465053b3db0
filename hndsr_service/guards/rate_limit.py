"""429 once a client has made its number of POSTs in the last rolling hour.

The client is the API key the request proved when ``API_KEYS`` is set (``RATE_LIMIT_PER_HOUR`` per key, or the
key's own limit), so rotating addresses buys nothing; without keys it is the client address (see
:mod:`~hndsr_service.client_ip`). With ``shared`` (``REDIS_URL``) the count is every replica's; this process's
own limiter is the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from .. import metrics
from ..client_ip import client_ip
from ..errors import ServiceError, send_error
from ..ratelimit import WINDOW_S, SharedLimits, SlidingWindowLimiter
from ..settings import Settings
from .api_key import request_key


@dataclass(frozen=True)
class Client:
    """Whom a request is counted against: ``name`` is the limiter's record (a key's fingerprint, never the key)."""

    name: str
    limit: int
    described: str


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, shared: SharedLimits | None = None) -> None:
        self.app = app
        self.trusted = settings.trusted_proxies
        self.limit = settings.rate_limit_per_hour
        self.limiter = SlidingWindowLimiter(settings.rate_limit_per_hour, max_keys=settings.rate_limit_max_clients)
        self.shared = shared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            client = self.client(scope)
            retry_after = (await self.shared.hit(client.name, self.limiter, WINDOW_S, client.limit) if self.shared
                           else self.limiter.hit(client.name, client.limit))
            if retry_after is not None:
                metrics.RATE_LIMITED.inc()
                await send_error(send, ServiceError(429, "rate_limited", f"more than {client.limit} requests in the "
                                                    f"last hour {client.described}", retry_after))
                return
        await self.app(scope, receive, send)

    def client(self, scope: Scope) -> Client:
        key = request_key(scope)
        if key is not None:
            return Client(f"key:{key.fingerprint}", key.rate_limit_per_hour or self.limit, "with this API key")
        return Client(client_ip(scope, self.trusted), self.limit, "from this address")
