"""Blocking work in anyio's worker threads, without keeping a failed call's memory alive.

Raised across anyio's thread boundary, an exception's traceback holds anyio's frame, which holds the
future, which holds the exception: a reference cycle that only a full garbage collection frees, and in
it every array, tensor and request body of the failed call's frames. A worker grew by GBs as clients
went away mid-inference (each stopped inference kept its tensors) until a collection happened to run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


async def run_in_thread(func: Callable[..., T], *args: Any) -> T:
    """``anyio.to_thread.run_sync(func, *args)``, its exception crossing as a value and raised here, outside
    the cycle. A caller that keeps a failed task or future must let go of it likewise."""
    result, error = await anyio.to_thread.run_sync(_catching, func, *args)
    if error is not None:
        try:
            raise error
        finally:
            del error  # raised, it holds this frame in its traceback: this frame must not hold it
    return result


def _catching(func: Callable[..., T], *args: Any) -> tuple[T | None, Exception | None]:
    try:
        return func(*args), None
    except Exception as exc:
        return None, exc
