"""The inference runner's memory: what a stopped or failed call held is freed at once (not at some later
garbage collection), and the C heap is trimmed at most once per interval."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import weakref
from collections.abc import Iterator

import numpy as np

from hndsr_model.pipeline import CancelCheck, InferenceCancelled
from hndsr_service.errors import ServiceError, api_errors
from hndsr_service.inference import HeapTrimmer, InferenceRunner
from hndsr_service.settings import load_settings
from hndsr_service.state import ServiceState
from hndsr_service.threads import run_in_thread


@contextlib.contextmanager
def without_garbage_collection() -> Iterator[None]:
    """Only reference counting frees memory inside: what a reference cycle holds stays."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def freed(ref: weakref.ref, within_s: float = 2.0) -> bool:
    """Whether the object goes within ``within_s``: the worker thread drops its last reference to a call's
    outcome a moment after reporting it, while an object in a reference cycle never goes (no collector runs)."""
    deadline = time.monotonic() + within_s
    while ref() is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return ref() is None


def fails_holding(refs: list[weakref.ref]) -> None:
    tensor_like = np.zeros((256, 256), np.float32)
    refs.append(weakref.ref(tensor_like))
    raise ValueError("the work failed")


def test_a_failed_call_in_a_thread_frees_its_frames_at_once() -> None:
    refs: list[weakref.ref] = []

    async def call() -> None:
        try:
            await run_in_thread(fails_holding, refs)
        except ValueError:
            pass
        assert await freed(refs[0]), "the failed call's array outlived its exception"

    with without_garbage_collection():
        asyncio.run(call())


def test_a_stopped_inference_frees_its_arrays_at_once() -> None:
    """A client that goes away mid-inference: its tensors (hundreds of MB on real images) go with it."""
    refs: list[weakref.ref] = []

    def work(should_cancel: CancelCheck) -> None:
        tiles = np.zeros((512, 512), np.float32)
        refs.append(weakref.ref(tiles))
        while not should_cancel():
            time.sleep(0.01)
        raise InferenceCancelled("cancelled before tile 2/4")

    async def gone() -> bool:
        return True

    async def request() -> None:
        runner = InferenceRunner(ServiceState(load_settings({})))
        try:
            await runner.run(work, gone)
        except ServiceError as exc:
            assert exc.status == 499
        assert refs and await freed(refs[0]), "the stopped inference's array outlived the request"

    with without_garbage_collection():
        asyncio.run(request())


def test_an_api_answering_a_stopped_inference_frees_its_arrays_at_once() -> None:
    """The API wrapper's error answer must not keep the exception (and the frames it holds) alive."""
    refs: list[weakref.ref] = []

    class Context:
        def __init__(self) -> None:
            self.request = type("Request", (), {"headers": {}, "scope": {}})()
            self.response = type("Response", (), {"status_code": 200, "headers": {}})()

    class Service:
        @api_errors
        async def upscale(self, ctx: Context) -> None:
            tiles = np.zeros((512, 512), np.float32)
            refs.append(weakref.ref(tiles))
            raise ServiceError(499, "client_closed_request", "the client went away")

    async def request() -> None:
        ctx = Context()
        response = await Service().upscale(ctx=ctx)
        assert ctx.response.status_code == 499 and response.status_code == 200  # status travels through ctx
        assert await freed(refs[0]), "the stopped inference's array outlived the API's error answer"

    with without_garbage_collection():
        asyncio.run(request())


def test_the_heap_is_trimmed_at_most_once_per_interval() -> None:
    trimmer = HeapTrimmer(interval_s=60)
    calls: list[int] = []
    trimmer.trim = calls.append
    for _ in range(3):
        trimmer()
    assert calls == [0]
    trimmer.last -= 61
    trimmer()
    assert calls == [0, 0]


class Cycle:
    """An object in a reference cycle: only a full garbage collection frees it and what it holds."""

    def __init__(self, refs: list[weakref.ref]) -> None:
        self.me = self
        self.buffer = np.zeros((256, 256), np.float32)
        refs.append(weakref.ref(self.buffer))


def test_an_idle_worker_settles_once_after_work_and_not_while_busy() -> None:
    """After the load stops, the runner collects cyclic garbage and trims the heap, once; never while a
    request is in flight, nor right after a request that came and went between two polls."""
    runner = InferenceRunner(ServiceState(load_settings({})))
    trims: list[int] = []
    runner.trim_heap.trim = trims.append
    refs: list[weakref.ref] = []

    async def scenario() -> None:
        settling = asyncio.ensure_future(runner.settle_when_idle(idle_s=0.4, poll_s=0.05))
        with runner.state.request_in_flight():
            runner.trim_heap.last -= 60  # due: the work's own trim runs
            runner.trim_heap()  # what every inference does as it ends
            Cycle(refs)
            await asyncio.sleep(0.6)
            assert refs[0]() is not None and trims == [0], "settled while a request was in flight"
        runner.trim_heap()  # a request between two polls: the quiet time starts again
        await asyncio.sleep(0.2)
        assert refs[0]() is not None and trims == [0], "settled right after work"
        for _ in range(200):  # the settle runs in a thread, which a loaded machine may start late
            if len(trims) > 1:
                break
            await asyncio.sleep(0.05)
        assert refs[0]() is None, "the idle worker kept the cycle's buffer"
        await asyncio.sleep(0.5)  # more idle polls, no more settles
        assert trims == [0, 0], "one trailing trim after the load stopped, and only one"
        settling.cancel()

    with without_garbage_collection():
        asyncio.run(scenario())
