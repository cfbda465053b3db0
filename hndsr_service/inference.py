"""Bounded, cancellable inference: concurrency slots, deadlines and client disconnects.

``run`` gives a request one deadline (``request_timeout_s``) for the wait for one of ``max_concurrent``
slots and the work (the pipeline or a raster product) in a worker thread; while the work runs it checks
the deadline and whether the client is still there;
either one stops the model at its next tile or diffusion step, and the slot is released only once
the thread has really stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import anyio
import torch

from hndsr_model.pipeline import CancelCheck, InferenceCancelled

from . import metrics
from .errors import ServiceError
from .state import ServiceState

POLL_S = 0.2


class HasTiles(Protocol):
    tiles: int


R = TypeVar("R", bound=HasTiles)


class InferenceRunner:
    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.slots = asyncio.Semaphore(state.settings.max_concurrent)

    @contextlib.asynccontextmanager
    async def slot(self, timeout_s: float | None = None) -> AsyncIterator[None]:
        """Hold one of the ``max_concurrent`` slots; waiters are served first come, first served.

        Past ``timeout_s`` of waiting the request gets 504 ``queue_timeout``.
        """
        try:
            await asyncio.wait_for(self.slots.acquire(), timeout=timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(504, "queue_timeout", f"no inference slot free within {timeout_s:g} s",
                               retry_after=5) from None
        try:
            with self.state.inference_running():
                yield
        finally:
            self.slots.release()

    async def run(self, work: Callable[[CancelCheck], R], disconnected: Callable[[], Awaitable[bool]]
                  ) -> tuple[R, float]:
        """Run ``work(should_cancel)`` in a slot; returns its result and the inference time in seconds.

        One deadline, ``REQUEST_TIMEOUT_S`` from now, covers the wait for a slot and the work (the spec's
        30 s): what needs longer is a scene job.
        """
        timeout_s = self.state.settings.request_timeout_s
        deadline = time.monotonic() + timeout_s
        async with self.slot(timeout_s):
            return await self._supervised(work, disconnected, deadline)

    async def _supervised(self, work: Callable[[CancelCheck], R], disconnected: Callable[[], Awaitable[bool]],
                          deadline: float) -> tuple[R, float]:
        cancel = threading.Event()
        reason: str | None = None
        started = time.perf_counter()
        task = asyncio.ensure_future(anyio.to_thread.run_sync(work, cancel.is_set))
        while not task.done():
            await asyncio.wait({task}, timeout=POLL_S)
            if task.done() or cancel.is_set():
                continue
            if time.monotonic() > deadline:
                reason = "timeout"
            elif await disconnected():
                reason = "client_disconnected"
            if reason:
                cancel.set()
        try:
            result = task.result()
        except InferenceCancelled:
            metrics.CANCELLED.labels(reason=reason or "unknown").inc()
            if reason == "timeout":
                raise ServiceError(504, "inference_timeout", "the request did not finish within "
                                   f"{self.state.settings.request_timeout_s:g} s and its inference was stopped; "
                                   "send large rasters as a scene job (POST /jobs)") from None
            raise ServiceError(499, "client_closed_request", "the client went away; inference was stopped") from None
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise ServiceError(503, "gpu_out_of_memory", "the GPU ran out of memory; retry later or send a "
                               "smaller image", retry_after=10) from None
        elapsed = time.perf_counter() - started
        metrics.INFERENCE_SECONDS.observe(elapsed)
        metrics.TILES.inc(result.tiles)
        return result, elapsed
