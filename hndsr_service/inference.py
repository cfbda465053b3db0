"""Bounded, cancellable inference: concurrency slots, deadlines and client disconnects.

``run`` gives a request one deadline (``request_timeout_s``) for the wait for one of ``max_concurrent``
slots and the work (the pipeline or a raster product) in a worker thread; while the work runs it checks
the deadline and whether the client is still there;
either one stops the model at its next tile or diffusion step, and the slot is released only once
the thread has really stopped. After the work its thread hands the C heap's free pages back to the
system (:class:`HeapTrimmer`), so that the worker's memory stays flat under sustained load, and once the
load stops the worker settles (:meth:`InferenceRunner.settle_when_idle`): what it then holds is what it keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import torch

from hndsr_model.pipeline import CancelCheck, InferenceCancelled

from . import metrics
from .errors import ServiceError
from .speed import Cost
from .state import ServiceState
from .threads import run_in_thread

POLL_S = 0.2


class HasTiles(Protocol):
    tiles: int


R = TypeVar("R", bound=HasTiles)


class HeapTrimmer:
    """Returns the C heap's free pages to the system (glibc's ``malloc_trim``), at most once per ``interval_s``.

    A request allocates and frees hundreds of MB (decoded images, tensors, encoded files, base64) in
    several threads. glibc keeps what is freed in its per-thread arenas, and after large blocks are
    freed it raises its mmap threshold, so later ones come from those arenas too: with no live object
    behind it, a worker under sustained load grew by ~100 MB a minute, and on. Trimming after the work
    keeps it flat; once a second bounds its cost (after every request it cost ~10 % more CPU). Other C
    libraries (musl) return freed memory by themselves and have no ``malloc_trim``.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.last = 0.0
        self.work_since_settled = False
        self.last_work = 0.0
        self.lock = threading.Lock()
        self.trim = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)

    def __call__(self) -> None:
        self.work_since_settled = True
        self.last_work = time.monotonic()
        if self.trim is None or time.monotonic() - self.last < self.interval_s:
            return
        if self.lock.acquire(blocking=False):  # another thread is trimming: that one is enough
            try:
                self.trim(0)
                self.last = time.monotonic()
            finally:
                self.lock.release()

    def settle(self) -> None:
        """Collect cyclic garbage, then trim: the last requests' buffers (encoded after the last trim, or kept
        by a reference cycle until a full collection that an idle process may never run) go back too."""
        self.work_since_settled = False
        gc.collect()
        with self.lock:
            if self.trim is not None:
                self.trim(0)
            self.last = time.monotonic()


class InferenceRunner:
    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.slots = asyncio.Semaphore(state.settings.max_concurrent)
        self.trim_heap = HeapTrimmer()

    async def settle_when_idle(self, idle_s: float = 2.0, poll_s: float = 1.0) -> None:
        """Forever: once nothing is in flight (:attr:`ServiceState.idle`) and the last work ended ``idle_s`` ago,
        settle the heap once (:meth:`HeapTrimmer.settle`; in a thread, where the trim lets go of the GIL, though
        the collection, tens of ms, does not).

        Under load the trims keep the worker flat; this is the trailing one, so that a worker at rest holds
        what it keeps, not what its last second of work happened to leave. Sparse requests each get one, at
        most one per ``idle_s``."""
        trimmer = self.trim_heap
        while True:
            await asyncio.sleep(poll_s)
            quiet_s = time.monotonic() - trimmer.last_work
            if trimmer.work_since_settled and self.state.idle and quiet_s >= idle_s:
                await run_in_thread(trimmer.settle)

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

    async def run(self, work: Callable[[CancelCheck], R], disconnected: Callable[[], Awaitable[bool]],
                  cost: Cost | None = None) -> tuple[R, float]:
        """Run ``work(should_cancel)`` in a slot; returns its result and the inference time in seconds.

        One deadline, ``REQUEST_TIMEOUT_S`` from now, covers the wait for a slot and the work (the spec's
        30 s): what needs longer is a scene job. Work whose ``cost`` the service's measured speed puts past
        that deadline is refused at once (413), and what it took teaches the estimate.
        """
        timeout_s = self.state.settings.request_timeout_s
        if cost is not None and self.state.settings.admit_by_speed:
            self._admit(cost, timeout_s)
        deadline = time.monotonic() + timeout_s
        async with self.slot(timeout_s):
            result, seconds = await self._supervised(work, disconnected, deadline)
        if cost is not None:
            self.state.speed.observe(cost, seconds)
        return result, seconds

    def _admit(self, cost: Cost, timeout_s: float) -> None:
        estimate = self.state.speed.seconds(cost)
        if estimate is not None and estimate > timeout_s:
            raise ServiceError(413, "too_slow_for_sync", f"this request needs about {estimate:.0f} s at this "
                               f"server's measured speed, over its {timeout_s:g} s deadline (REQUEST_TIMEOUT_S); "
                               "submit it as a scene job (POST /jobs), which has no deadline")

    async def _supervised(self, work: Callable[[CancelCheck], R], disconnected: Callable[[], Awaitable[bool]],
                          deadline: float) -> tuple[R, float]:
        cancel = threading.Event()
        reason: str | None = None
        started = time.perf_counter()

        def work_then_trim(should_cancel: CancelCheck) -> R:
            try:
                return work(should_cancel)
            finally:
                self.trim_heap()

        task = asyncio.ensure_future(run_in_thread(work_then_trim, cancel.is_set))
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
        finally:
            del task  # a failed task holds its exception, whose traceback now holds this frame (see run_in_thread)
        elapsed = time.perf_counter() - started
        metrics.INFERENCE_SECONDS.observe(elapsed)
        metrics.TILES.inc(result.tiles)
        return result, elapsed
