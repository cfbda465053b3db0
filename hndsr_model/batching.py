"""Micro-batching: the tiles of concurrent requests go through the network together.

Each request thread hands its tiles over as a :class:`TileWork` and waits. One worker
thread takes the oldest waiting work, adds every other waiting work of the same key (tile size, scale,
diffusion steps, uncertainty map and samples) while the batch stays within ``max_tiles`` tiles (an uncertainty
map's diffusion samples run one pass each over the batch), and runs them as one batch: at once
when the batch is full, else once the oldest work has waited ``max_wait_s``. Every work keeps what made
it reproducible (its own seeded noise per tile), so a request's output does not depend on its company
beyond floating-point rounding.

Cancellation still holds: a work cancelled while it waits leaves the queue (its request stops at once);
one cancelled while its batch runs leaves the batch at the next diffusion step. The caller's inference
slot therefore still bounds what runs, and is released only once its work has really stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import torch

CancelCheck = Callable[[], bool]
POLL_S = 0.05  # how often a waiting request looks at its cancel check


class InferenceCancelled(Exception):
    """Raised between tiles or diffusion steps once ``should_cancel()`` returns True."""


@dataclass(eq=False)
class TileWork:
    """Same-sized LR tiles of one request that go through the network together, possibly in one batch
    with other requests' work of the same :attr:`key`; :attr:`result` gets the ``(n, 3, s*h, s*w)`` HR
    tiles (``(n, 4, ...)`` with the uncertainty map), or :class:`InferenceCancelled`."""

    lr: torch.Tensor  # (n, 3, h, w) on the model's device
    scale: int
    steps: int
    # (n * samples, 48, ceil(s*h/4), ceil(s*w/4)), tile-major: the sampler's starts, seeded per tile and sample
    noise: torch.Tensor | None
    cancelled: CancelCheck
    first_tile: int  # for messages: tiles first_tile + 1 .. first_tile + n of total
    total: int
    uncertainty: bool = False  # the result carries the uncertainty map as a 4th channel
    samples: int = 1  # diffusion samples per tile (more than one only for the uncertainty map)
    result: Future[torch.Tensor] = field(default_factory=Future)

    def __len__(self) -> int:
        return self.lr.shape[0]

    @property
    def key(self) -> tuple[int | bool, ...]:
        """Works with equal keys can share a batch."""
        return (*self.lr.shape[1:], self.scale, self.steps, self.uncertainty, self.samples)


class MicroBatcher:
    def __init__(self, run: Callable[[list[TileWork]], None], max_tiles: int, max_wait_s: float) -> None:
        """``run(works)`` computes one batch and sets every work's result (see ``HNDSRPipeline._run_batch``)."""
        self.run = run
        self.max_tiles = max_tiles
        self.max_wait_s = max_wait_s
        self._queue: list[tuple[float, TileWork]] = []  # (arrival, work), oldest first
        self._changed = threading.Condition()
        self.batches = 0  # batches run so far, and the tiles in them (for tests and benchmarks)
        self.tiles = 0
        threading.Thread(target=self._serve, name="hndsr-micro-batcher", daemon=True).start()

    def submit(self, work: TileWork) -> torch.Tensor:
        """Queue ``work`` and wait for its tiles; raises :class:`InferenceCancelled` once its request is cancelled."""
        with self._changed:
            self._queue.append((time.monotonic(), work))
            self._changed.notify()
        while True:
            try:
                return work.result.result(timeout=POLL_S)
            except FutureTimeout:
                if work.cancelled() and self._withdraw(work):
                    raise InferenceCancelled(f"cancelled before tile {work.first_tile + 1}/{work.total}") from None

    def _withdraw(self, work: TileWork) -> bool:
        """Take ``work`` off the queue if no batch has taken it yet."""
        with self._changed:
            for entry in self._queue:
                if entry[1] is work:
                    self._queue.remove(entry)
                    return True
        return False

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            self.batches += 1
            self.tiles += sum(len(work) for work in batch)
            try:
                self.run(batch)
            except Exception as exc:  # the requests' threads raise it (CUDA out of memory, say), not this one
                for work in batch:
                    if not work.result.done():
                        work.result.set_exception(exc)

    def _next_batch(self) -> list[TileWork]:
        with self._changed:
            while True:
                if self._queue:
                    arrived, first = self._queue[0]
                    batch = self._gather(first)
                    wait = arrived + self.max_wait_s - time.monotonic()
                    if sum(len(work) for work in batch) >= self.max_tiles or wait <= 0:
                        self._queue = [entry for entry in self._queue if entry[1] not in batch]
                        return batch
                    self._changed.wait(wait)
                else:
                    self._changed.wait()

    def _gather(self, first: TileWork) -> list[TileWork]:
        """The oldest work and, in arrival order, the others of its key that fit in ``max_tiles``."""
        batch, tiles = [first], len(first)
        for _, work in self._queue[1:]:
            if work.key == first.key and tiles + len(work) <= self.max_tiles:
                batch.append(work)
                tiles += len(work)
        return batch
