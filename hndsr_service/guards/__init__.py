"""Admission control as pure-ASGI middleware, one guard per module, in the spec's request-flow order:

    RequestId -> RequestMetrics -> ApiKey -> QueueDepth -> RateLimit -> MediaType -> PayloadSize -> BodyTimeout
    -> ErrorEnvelope -> APIs

Each rejection is a complete JSON response, sent before the body is read (PayloadSize without a
``Content-Length`` and BodyTimeout: while it is read, which they then cut short). Probe, version and metrics
routes are GETs and pass through every guard untouched.
"""

from __future__ import annotations

from typing import Any

from ..ratelimit import SharedLimits
from ..settings import Settings
from ..state import ServiceState
from .api_key import ApiKeyMiddleware
from .body_timeout import BodyTimeoutMiddleware
from .error_envelope import ErrorEnvelopeMiddleware
from .media_type import MediaTypeMiddleware
from .payload_size import PayloadSizeMiddleware
from .queue_depth import QueueDepthMiddleware
from .rate_limit import RateLimitMiddleware
from .request_id import RequestIdMiddleware
from .request_metrics import RequestMetricsMiddleware

__all__ = ["ApiKeyMiddleware", "BodyTimeoutMiddleware", "ErrorEnvelopeMiddleware", "MediaTypeMiddleware",
           "PayloadSizeMiddleware", "QueueDepthMiddleware", "RateLimitMiddleware", "RequestIdMiddleware",
           "RequestMetricsMiddleware", "stack"]


def stack(settings: Settings, state: ServiceState, shared: SharedLimits | None) -> list[tuple[type, dict[str, Any]]]:
    """Every guard with its options, outermost first (the order ``add_asgi_middleware`` is called in)."""
    return [
        (RequestIdMiddleware, {}),
        (RequestMetricsMiddleware, {}),
        (ApiKeyMiddleware, {"settings": settings}),
        (QueueDepthMiddleware, {"settings": settings, "state": state, "shared": shared}),
        (RateLimitMiddleware, {"settings": settings, "shared": shared}),
        (MediaTypeMiddleware, {}),
        (PayloadSizeMiddleware, {"settings": settings}),
        (BodyTimeoutMiddleware, {"settings": settings}),
        (ErrorEnvelopeMiddleware, {}),
    ]
