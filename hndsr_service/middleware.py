"""Admission control as pure-ASGI middleware, one concern each, in the spec's request-flow order.

    RequestMetrics -> ApiKey -> QueueDepth -> RateLimit -> PayloadSize -> ErrorEnvelope -> BentoML APIs

Each rejection is a complete JSON response sent before the body is read. Probe, version and metrics
routes are GETs and pass through every guard untouched.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import metrics
from .errors import ERROR_HEADER, ServiceError, send_error
from .settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INFERENCE_PATHS = frozenset({"/infer", "/upscale"})
WINDOW_S = 3600


def is_inference(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in INFERENCE_PATHS


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestMetricsMiddleware:
    """Counts every HTTP response in ``hndsr_requests_total`` and errors in ``hndsr_errors_total``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen: dict[str, Any] = {"status": 500, "error": None}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["error"] = next((v.decode() for k, v in message.get("headers", ())
                                      if k.lower() == ERROR_HEADER.encode()), None)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            error = seen["error"] or ("http_error" if seen["status"] >= 400 else None)
            metrics.record_response(scope["path"], seen["status"], error)


MUTATING_METHODS = frozenset({"POST", "DELETE"})


class ApiKeyMiddleware:
    """With ``API_KEYS`` set, every POST (and DELETE) needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

    GETs (probes, version, metrics, docs) stay open for orchestrators and Prometheus.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = [key.encode() for key in settings.api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.keys and scope["type"] == "http" and scope["method"] in MUTATING_METHODS and not self._authorised(scope):
            await send_error(send, ServiceError(401, "unauthorized", "a valid API key is required "
                                                "(Authorization: Bearer <key> or X-API-Key)"))
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        bearer = header(scope, b"authorization") or ""
        offered = header(scope, b"x-api-key") or (bearer[7:] if bearer.lower().startswith("bearer ") else "")
        # Compare against every key so the time taken does not say which one nearly matched.
        return sum(hmac.compare_digest(offered.encode(), key) for key in self.keys) > 0


class InFlight:
    """Inference requests admitted and not yet answered (this process), and whether new ones are refused
    because the service is draining; read by /health and the shutdown drain."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False


class QueueDepthMiddleware:
    """Sheds inference requests with 503 once ``max_queue_depth`` are in flight, or while draining."""

    def __init__(self, app: ASGIApp, settings: Settings, in_flight: InFlight) -> None:
        self.app = app
        self.limit = settings.max_queue_depth
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_inference(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight.draining:
            await send_error(send, ServiceError(503, "draining", "the service is shutting down; retry on "
                                                "another instance or shortly", retry_after=5))
            return
        if self.in_flight.count >= self.limit:
            metrics.BACKPRESSURE_REJECTED.inc()
            await send_error(send, ServiceError(503, "overloaded", f"{self.in_flight.count} requests in flight "
                                                f"(limit {self.limit}); retry later", retry_after=5))
            return
        self.in_flight.count += 1
        metrics.ACTIVE_REQUESTS.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.count -= 1
            metrics.ACTIVE_REQUESTS.dec()


class SlidingWindowLimiter:
    """Exact rolling-window limit per key with bounded memory.

    Each key keeps at most ``limit`` timestamps as whole seconds in a compact ``array`` (about 70 bytes
    for a key with one hit); keys idle for a whole window are purged, and beyond ``max_keys`` the least
    recently seen key is evicted.
    """

    def __init__(self, limit: int, window_s: int = WINDOW_S, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self.epoch = clock()
        self.hits: OrderedDict[str, array] = OrderedDict()

    def _now(self) -> int:
        return int(self.clock() - self.epoch)

    def hit(self, key: str) -> int | None:
        """Record a hit; returns None if allowed, else seconds until the oldest hit leaves the window."""
        now = self._now()
        self._purge(now)
        stamps = self.hits.pop(key, None) or array("I")
        cutoff = now - self.window_s
        drop = next((i for i, t in enumerate(stamps) if t > cutoff), len(stamps))
        del stamps[:drop]
        self.hits[key] = stamps
        if len(stamps) >= self.limit:
            return max(1, stamps[0] + self.window_s - now)
        stamps.append(now)
        while len(self.hits) > self.max_keys:
            self.hits.popitem(last=False)
        return None

    def _purge(self, now: int) -> None:
        """Drop keys whose newest hit left the window; the dict is ordered by last use."""
        cutoff = now - self.window_s
        while self.hits:
            key, stamps = next(iter(self.hits.items()))
            if stamps and stamps[-1] > cutoff:
                break
            del self.hits[key]


def client_ip(scope: Scope, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    """The socket peer, or with a trusted proxy as peer the nearest untrusted ``X-Forwarded-For`` hop."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    forwarded = header(scope, b"x-forwarded-for")
    if not forwarded or not _in(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _in(hop, trusted):
            return hop
    return peer


def _in(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


class RateLimitMiddleware:
    """429 once a client IP has made ``rate_limit_per_hour`` POSTs in the last rolling hour."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.trusted = settings.trusted_proxies
        self.limiter = SlidingWindowLimiter(settings.rate_limit_per_hour, max_keys=settings.rate_limit_max_clients)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            retry_after = self.limiter.hit(client_ip(scope, self.trusted))
            if retry_after is not None:
                metrics.RATE_LIMITED.inc()
                await send_error(send, ServiceError(429, "rate_limited", f"more than {self.limiter.limit} "
                                                    "requests in the last hour from this address", retry_after))
                return
        await self.app(scope, receive, send)


def too_large(limit: int) -> ServiceError:
    return ServiceError(413, "payload_too_large", f"request body exceeds {limit / 2**20:g} MB")


class PayloadSizeMiddleware:
    """413 for a body over its route's limit (``MAX_PAYLOAD_MB``; ``MAX_JOB_UPLOAD_MB`` for scene uploads to
    ``/jobs``): by ``Content-Length`` up front, else counted as it streams."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.default_limit = settings.max_payload_bytes
        self.limits = {"/jobs": settings.max_job_upload_bytes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_limit)
        length = header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await send_error(send, ServiceError(400, "invalid_content_length", "Content-Length is not a number"))
            elif int(length) > limit:
                await send_error(send, too_large(limit))
            else:
                await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Stream the body through, cutting it at the limit: the client gets 413, the app a disconnect."""
        state = {"received": 0, "cut": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not state["cut"]:
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["cut"] = True
                    await send_error(send, too_large(limit))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not state["cut"]:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["cut"]:
                raise
            # The app failed on the disconnect it was handed; the client already has its 413.


class ErrorEnvelopeMiddleware:
    """Gives BentoML's own error answers on the inference routes the service's envelope.

    BentoML answers a request that fails its input validation with 400 and a body of its own; the
    contract says 422 with ``{"error", "detail"}``. Only error responses without ``X-Error-Code`` are
    buffered (they are small); everything else streams through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_inference(scope):
            await self.app(scope, receive, send)
            return
        pending: dict[str, Any] = {}

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = any(k.lower() == ERROR_HEADER.encode() for k, _ in message.get("headers", ()))
                if message["status"] < 400 or own:
                    await send(message)
                else:
                    pending["start"], pending["body"] = message, b""
            elif "start" in pending:
                pending["body"] += message.get("body", b"")
                if not message.get("more_body", False):
                    await send_error(send, foreign_error(pending["start"]["status"], pending["body"]))
            else:
                await send(message)

        await self.app(scope, receive, rewrite)


def foreign_error(status: int, body: bytes) -> ServiceError:
    """Map a BentoML error response to the envelope; client mistakes become 422."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = body.decode(errors="replace")
    if isinstance(payload, list) and payload:  # BentoML wraps some errors in a one-element list
        payload = payload[0]
    detail = _describe(payload)
    if status >= 500:
        return ServiceError(status, "internal_error", "the server failed to process the request")
    if status in (400, 422):
        return ServiceError(422, "invalid_request", detail)
    return ServiceError(status, "http_error", detail)


def _describe(payload: Any) -> str:
    if not isinstance(payload, dict):
        return str(payload)[:500]
    problems = payload.get("detail")
    if isinstance(problems, list):
        parts = [f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg', '')}" for item in problems
                 if isinstance(item, dict)]
        return "; ".join(parts)[:500] or str(payload.get("error", "invalid request"))
    return str(payload.get("error") or problems or "invalid request")[:500]
