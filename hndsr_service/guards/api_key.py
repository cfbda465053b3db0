"""With ``API_KEYS`` set, every POST (and DELETE) needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

GETs (probes, version, metrics, docs) stay open for orchestrators and Prometheus. The key a request proved is
left in its scope (as Starlette's authentication middleware leaves the user) for the rate limit, which then
counts per key. The key itself is never logged, echoed, or used as a metric label.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ServiceError, send_error
from ..settings import ApiKey, Settings

MUTATING_METHODS = frozenset({"POST", "DELETE"})
SCOPE_KEY = "hndsr.api_key"
UNAUTHORIZED = ServiceError(401, "unauthorized", "a valid API key is required (Authorization: Bearer <key> or "
                                                 "X-API-Key: <key>)")


def offered_key(headers: Headers) -> str:
    """The key a request offers, or "" (``X-API-Key`` first, then a bearer token)."""
    bearer = headers.get("authorization", "")
    return headers.get("x-api-key") or (bearer[7:] if bearer.lower().startswith("bearer ") else "")


def find_key(offered: str, keys: tuple[ApiKey, ...]) -> ApiKey | None:
    """The configured key equal to ``offered``, compared with every key in constant time, so the time taken
    does not say which one nearly matched."""
    found = None
    for key in keys:
        if hmac.compare_digest(offered.encode(), key.secret.encode()):
            found = key
    return found


def request_key(scope: Scope) -> ApiKey | None:
    """The key this request was admitted with (None when the service has no keys, or for a GET)."""
    return scope.get(SCOPE_KEY)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = settings.api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.keys and scope["type"] == "http" and scope["method"] in MUTATING_METHODS:
            key = find_key(offered_key(Headers(scope=scope)), self.keys)
            if key is None:
                await send_error(send, UNAUTHORIZED)
                return
            scope[SCOPE_KEY] = key
        await self.app(scope, receive, send)
