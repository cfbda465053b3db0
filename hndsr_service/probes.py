"""Operational routes: ``/health``, ``/ready``, ``/version`` and ``/metrics`` (plus the web page, ``ui.py``).

They read one :class:`ServiceState`, which the BentoML service fills in as it loads, warms and
drains, so BentoML's own ``/livez``/``/readyz`` (via ``__is_alive__``/``__is_ready__``) and these
routes always agree.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import bentoml
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hndsr_model.pipeline import HNDSRPipeline

from . import metrics
from .middleware import InFlight
from .schemas import API_VERSION
from .settings import Settings
from .ui import ui_routes


@dataclass
class ServiceState:
    settings: Settings
    in_flight: InFlight
    pipeline: HNDSRPipeline | None = None
    failure: str | None = None
    warmed: bool = False
    running_inferences: int = 0
    started: float = field(default_factory=time.time)

    @property
    def device(self) -> str:
        return str(self.pipeline.device) if self.pipeline else self.settings.device

    @property
    def draining(self) -> bool:
        return self.in_flight.draining

    def drain(self, timeout_s: float, then: Callable[[], None]) -> None:
        """Refuse new inferences and fail readiness now; call ``then`` once in-flight requests are done.

        The wait runs in a thread so the event loop keeps answering probes and finishing requests.
        """
        self.in_flight.draining = True

        def wait() -> None:
            deadline = time.monotonic() + timeout_s
            while self.in_flight.count and time.monotonic() < deadline:
                time.sleep(0.05)
            then()

        threading.Thread(target=wait, name="hndsr-drain", daemon=True).start()

    @property
    def alive(self) -> bool:
        return self.failure is None

    @property
    def ready(self) -> bool:
        return self.pipeline is not None and self.warmed and not self.draining and self.failure is None

    def not_ready_reason(self) -> str:
        if self.failure:
            return self.failure
        if self.draining:
            return "draining: the service is shutting down"
        return "model is loading and warming up"

    def gpu_memory(self) -> tuple[float, float]:
        """(used, total) bytes on the serving GPU; (0, 0) on the CPU."""
        if self.pipeline is None or self.pipeline.device.type != "cuda":
            return 0.0, 0.0
        index = self.pipeline.device.index or 0
        return float(torch.cuda.memory_reserved(index)), float(torch.cuda.get_device_properties(index).total_memory)

    def live_gauges(self) -> dict[str, tuple[str, float]]:
        used, total = self.gpu_memory()
        return {
            "hndsr_uptime_seconds": ("Seconds since the service process started", time.time() - self.started),
            "hndsr_gpu_memory_used_bytes": ("GPU memory reserved by the model (0 on CPU)", used),
            "hndsr_gpu_memory_total_bytes": ("Total memory of the serving GPU (0 on CPU)", total),
            "hndsr_model_ready": ("1 when the model is loaded, warmed and not draining", float(self.ready)),
            "hndsr_inferences_running": ("Inferences holding a concurrency slot", float(self.running_inferences)),
            "hndsr_queue_depth_limit": ("MAX_QUEUE_DEPTH", float(self.settings.max_queue_depth)),
            "hndsr_concurrency_limit": ("MAX_CONCURRENT", float(self.settings.max_concurrent)),
        }


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
            "active_requests": state.in_flight.count,
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
            "python": platform.python_version(),
            "torch": torch.__version__,
            "bentoml": bentoml.__version__,
            "device": state.device,
        })

    async def metrics_view(_: Request) -> Response:
        return Response(metrics.render(live), media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/health", health), Route("/ready", ready), Route("/version", version),
                             Route("/metrics", metrics_view), *routes, *ui_routes(state.settings)])
