"""Operational routes: ``/health``, ``/ready``, ``/version`` and ``/metrics`` (plus the web page, ``ui.py``).

They read the one :class:`~hndsr_service.state.ServiceState`, which the BentoML service's own
``/livez``/``/readyz`` (via ``__is_alive__``/``__is_ready__``) read too, so they always agree.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import bentoml
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hndsr_model.weights import DEFAULT_VARIANT

from . import metrics
from .schemas import API_VERSION
from .state import ServiceState
from .ui import ui_routes

Gauges = Callable[[], dict[str, tuple[str, float]]]


def build_probe_app(state: ServiceState, routes: Sequence[BaseRoute] = (), gauges: Sequence[Gauges] = ()
                    ) -> Starlette:
    """The Starlette app mounted beside BentoML's routes: probes, metrics, and the ``routes`` given
    (the scene jobs); ``gauges`` add scrape-time values to ``/metrics``."""

    def live() -> dict[str, tuple[str, float]]:
        values = state.live_gauges()
        for read in gauges:
            values.update(read())
        return values

    async def health(_: Request) -> Response:
        body: dict[str, Any] = {
            "status": "healthy" if state.alive else "unhealthy",
            "model_loaded": state.pipeline is not None,
            "device": state.device,
            "uptime_seconds": round(time.time() - state.started, 3),
            "active_requests": state.in_flight,
        }
        if not state.alive:
            body["reason"] = state.failure
        return JSONResponse(body, status_code=200 if state.alive else 503)

    async def ready(_: Request) -> Response:
        if state.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not_ready", "reason": state.not_ready_reason()}, status_code=503,
                            headers={"retry-after": "5"})

    async def version(_: Request) -> Response:
        model = state.pipeline.model if state.pipeline else None
        return JSONResponse({
            "api_version": API_VERSION,
            "model": "hndsr",
            "model_version": model.version if model else None,
            "weights_sha256": model.sha256 if model else None,
            "default_variant": DEFAULT_VARIANT,
            "variants": {variant: {"model_version": p.version, "weights_sha256": p.model.sha256}
                         for variant, p in state.pipelines.items()},
            "python": platform.python_version(),
            "torch": torch.__version__,
            "bentoml": bentoml.__version__,
            "device": state.device,
            "engine": state.pipeline.engine.name if state.pipeline else None,
            "speed": state.speed.seconds_per_megapixel(),
        })

    async def metrics_view(_: Request) -> Response:
        return Response(metrics.render(live), media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/health", health), Route("/ready", ready), Route("/version", version),
                             Route("/metrics", metrics_view), *routes, *ui_routes(state.settings)])
