"""The service's runtime state, one owner: the model (loaded, warmed, or why not), requests in flight,
inferences running, and draining.

Everything else asks it: the probes (``/health``, ``/ready``, BentoML's ``/livez``/``/readyz``), the queue-depth
guard, the inference runner, the scene jobs and the shutdown drain. A count and its metric change together
here, so they cannot disagree.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import torch

from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.weights import DEFAULT_VARIANT

from . import metrics
from .errors import ServiceError
from .settings import Settings
from .speed import SpeedEstimate

DRAINING_RETRY_AFTER_S = 5
MODEL_RETRY_AFTER_S = 30  # a model loads in seconds to a minute

DRAIN_POLL_S = 0.05


class ServiceState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = time.time()
        self._pipelines: dict[str, HNDSRPipeline] = {}
        self._failure: str | None = None
        self._in_flight = 0
        self._running = 0
        self._draining = False
        self.speed = SpeedEstimate()  # seconds per unit of work, learnt from the inferences answered

    # The model ------------------------------------------------------------------------------------------

    def model_ready(self, pipelines: dict[str, HNDSRPipeline]) -> None:
        """The model's variants (by name; the default among them) are loaded and warmed: the service may take
        inferences."""
        if DEFAULT_VARIANT not in pipelines:
            raise ValueError(f"the default variant {DEFAULT_VARIANT!r} must be loaded")
        self._pipelines = dict(pipelines)

    def model_failed(self, reason: str) -> None:
        """The model could not load; the service stays up, unready, and says why."""
        self._failure = reason

    @property
    def pipeline(self) -> HNDSRPipeline | None:
        """The default variant's pipeline (None until the model is ready)."""
        return self._pipelines.get(DEFAULT_VARIANT)

    @property
    def pipelines(self) -> dict[str, HNDSRPipeline]:
        """Every loaded variant's pipeline, by name."""
        return self._pipelines

    @property
    def failure(self) -> str | None:
        return self._failure

    @property
    def device(self) -> str:
        return str(self.pipeline.device) if self.pipeline else self.settings.device

    # Requests -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def request_in_flight(self) -> Iterator[None]:
        """Count an admitted inference request until it is answered (``hndsr_active_requests`` with it)."""
        self._in_flight += 1
        metrics.ACTIVE_REQUESTS.inc()
        try:
            yield
        finally:
            self._in_flight -= 1
            metrics.ACTIVE_REQUESTS.dec()

    @property
    def in_flight(self) -> int:
        """Inference requests admitted in this process and not yet answered."""
        return self._in_flight

    @property
    def idle(self) -> bool:
        """No request in flight and no inference (a scene job's included) holding a slot."""
        return self._in_flight == 0 and self._running == 0

    @contextlib.contextmanager
    def inference_running(self) -> Iterator[None]:
        """Count an inference holding a concurrency slot (``hndsr_inferences_running``)."""
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1

    # Lifecycle ------------------------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self, timeout_s: float, then: Callable[[], None]) -> None:
        """Refuse new inferences and fail readiness now; call ``then`` once in-flight requests are done.

        The wait runs in a thread so the event loop keeps answering probes and finishing requests.
        """
        self._draining = True

        def wait() -> None:
            deadline = time.monotonic() + timeout_s
            while self._in_flight and time.monotonic() < deadline:
                time.sleep(DRAIN_POLL_S)
            then()

        threading.Thread(target=wait, name="hndsr-drain", daemon=True).start()

    @property
    def alive(self) -> bool:
        return self._failure is None

    @property
    def ready(self) -> bool:
        return self.pipeline is not None and not self._draining and self._failure is None

    def refusal(self) -> ServiceError | None:
        """Why a new inference or scene job is refused before its body is read, or None: the one admission check
        of the synchronous API and the jobs (their queue limits come after it)."""
        if self._draining:
            return ServiceError(503, "draining", "the service is shutting down; retry on another instance or "
                                "shortly", retry_after=DRAINING_RETRY_AFTER_S)
        if not self.ready:
            return ServiceError(503, "model_unavailable", self.not_ready_reason(), retry_after=MODEL_RETRY_AFTER_S)
        return None

    def not_ready_reason(self) -> str:
        if self._failure:
            return self._failure
        if self._draining:
            return "draining: the service is shutting down"
        return "model is loading and warming up"

    # Scrape-time gauges ---------------------------------------------------------------------------------

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
            "hndsr_inferences_running": ("Inferences holding a concurrency slot", float(self._running)),
            "hndsr_queue_depth_limit": ("MAX_QUEUE_DEPTH", float(self.settings.max_queue_depth)),
            "hndsr_concurrency_limit": ("MAX_CONCURRENT", float(self.settings.max_concurrent)),
        }
