"""Load and soak: mixed traffic against a real HNDSR server, checked for statuses, memory and metrics.

    python -m benchmarks load_soak                               # the full soak: 600 s, 32 clients, queue depth 20
    python -m benchmarks load_soak --duration 60 --clients 12 --queue-depth 8 --json out.json   # the short form

Starts `bentoml serve service:HNDSR` on a free loopback port (the model from the BentoML store: run
`scripts/serve` or `python -m hndsr_service.model_store` once first) with MAX_QUEUE_DEPTH below the number of
clients, so that some requests are shed. For --duration seconds each client sends a seeded mix: valid images
of several sizes and scales (JSON and multipart; PNG, JPEG, WebP, GeoTIFF; a few with diffusion steps),
corrupt files, pixel bombs, bodies over MAX_PAYLOAD_MB (by Content-Length and streamed), uploads trickled
over seconds, slow readers, and requests abandoned mid-inference. One more client sends from a single
address into the rate limit; the others move to a new loopback address before they come near it.

Prints (and writes with --json) the statuses per kind of request, p50/p95/p99 of accepted (200) requests,
the worker's resident memory (every second; and at rest, once warm and at the end, when the worker has
settled: nothing in flight, garbage collected, heap trimmed; the clients pause for it) and the server's
``hndsr_requests_total`` for the routes the clients use beside the client's own counts. Exits 1 when a check
fails: a status the service is not designed to give that request (a 500 above all), a transport error,
metrics that disagree with the client, or growth of the memory at rest over --max-growth-mb.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import signal
import statistics
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from hndsr_service.local_server import local_server, rss_bytes, worker_pid

from .scrape import active_requests, requests_by_status

ENDPOINTS = ("/infer", "/upscale", "/jobs")  # where the clients send; their hndsr_requests_total is compared
SHED = 503  # overloaded: MAX_QUEUE_DEPTH requests in flight
SLOW = 504  # queue_timeout / inference_timeout under load
TOO_SLOW = 413  # too_slow_for_sync: the service's speed estimate, under this load, is past the deadline
HAMMER_ADDRESS = "127.0.0.254"
# A connection idle for 2 s is dropped by the client, well before the server's keep-alive timeout (5 s) can
# close it under a request the client has just started sending on it (a transport error that is nobody's bug).
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=2.0)
MB = 2**20
CENSUS_HOOK = Path(__file__).parent / "census"
SETTLED_AFTER_S = 3.5  # the worker settles 2-3 s after its last work (2 s quiet, polled each second)


@dataclass
class Outcome:
    kind: str
    status: int | None  # None: no answer (abandoned on purpose, or a transport error)
    seconds: float
    started: float
    error: str | None = None  # the envelope's code, or the transport error
    abandoned: bool = False


# -- payloads ---------------------------------------------------------------------------------------------


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random RGB image (like a photo at small scale, unlike white noise)."""
    small = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def geotiff(rng: np.random.Generator, size: int, width: int | None = None, sparse: bool = False) -> bytes:
    """A one-band uint16 GeoTIFF; ``sparse``: no pixel written (a tiny file with a huge header)."""
    width = width or size
    profile = {"driver": "GTiff", "width": width, "height": size, "count": 1, "dtype": "uint16",
               "crs": "EPSG:32633", "transform": from_origin(500_000, 4_600_000, 10, 10), "tiled": True,
               "compress": "deflate", "sparse_ok": sparse}
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            if not sparse:
                ramp = np.linspace(200, 4000, size * width).reshape(size, width)
                dst.write((ramp + rng.normal(0, 50, ramp.shape)).astype(np.uint16), 1)
        return mem.read()


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid PNG header that declares a huge image over a few bytes of data: decoding it would take GBs."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@dataclass
class Payloads:
    """Every body the clients send, made once before the load starts."""

    images: dict[tuple[int, str], bytes]  # (side, format) -> file
    tiffs: list[bytes]
    abandon_image: bytes
    corrupt: list[bytes]
    bombs: list[tuple[str, bytes]]
    oversized: bytes

    @classmethod
    def make(cls, seed: int, max_payload_bytes: int) -> Payloads:
        rng = np.random.default_rng(seed)
        images = {(side, fmt): encoded(smooth_image(rng, side, side), fmt)
                  for side in (32, 64, 96, 128, 192) for fmt in ("PNG", "JPEG", "WEBP")}
        png = images[(128, "PNG")]
        return cls(
            images=images,
            tiffs=[geotiff(rng, 64), geotiff(rng, 96, 128)],
            abandon_image=encoded(smooth_image(rng, 384, 384), "PNG"),
            corrupt=[png[: len(png) // 2], rng.bytes(4096), b"\x89PNG\r\n\x1a\n" + rng.bytes(512),
                     b"not an image at all"],
            bombs=[("bomb.png", png_bomb()), ("bomb.tif", geotiff(rng, 50_000, 50_000, sparse=True))],
            oversized=rng.bytes(max_payload_bytes + MB),
        )


# -- one client ---------------------------------------------------------------------------------------------


class Client:
    """One virtual user: sends a weighted mix until the deadline; rotates its source address before the
    rate limit could see it (``limit // 2`` requests per address)."""

    def __init__(self, index: int, url: str, payloads: Payloads, rng: random.Random, rate_limit: int,
                 outcomes: list[Outcome], gate: asyncio.Event, only: set[str] | None = None) -> None:
        self.index = index
        self.gate = gate  # cleared while the worker's memory is measured at rest
        self.url = url
        self.payloads = payloads
        self.rng = rng
        self.per_address = max(1, rate_limit // 2)
        self.outcomes = outcomes
        self.sent_from_address = 0
        self.address_number = 0
        self.http = self._client()
        self.kinds: list[tuple[str, float, Callable[[], Awaitable[Outcome]]]] = [
            ("infer", 30, self.infer), ("upscale", 25, self.upscale), ("geotiff", 5, self.geotiff),
            ("diffusion", 3, self.diffusion), ("corrupt", 10, self.corrupt), ("bomb", 5, self.bomb),
            ("oversized", 3, self.oversized), ("oversized_streamed", 2, self.oversized_streamed),
            ("slow_upload", 4, self.slow_upload), ("slow_reader", 4, self.slow_reader),
            ("abandoned", 5, self.abandoned)]
        if only:
            self.kinds = [k for k in self.kinds if k[0] in only]

    def _client(self) -> httpx.AsyncClient:
        address = f"127.1.{self.index}.{self.address_number % 250 + 1}"
        return httpx.AsyncClient(base_url=self.url, timeout=120, limits=CLIENT_LIMITS,
                                 transport=httpx.AsyncHTTPTransport(local_address=address, limits=CLIENT_LIMITS))

    async def run(self, deadline: float) -> None:
        names = [k[0] for k in self.kinds]
        weights = [k[1] for k in self.kinds]
        actions = {k[0]: k[2] for k in self.kinds}
        try:
            while time.monotonic() < deadline:
                await self.gate.wait()
                if self.sent_from_address >= self.per_address:
                    await self.http.aclose()
                    self.address_number += 1
                    self.sent_from_address = 0
                    self.http = self._client()
                self.sent_from_address += 1
                kind = self.rng.choices(names, weights)[0]
                result = await actions[kind]()
                self.outcomes.append(result)
                if result.status == SHED:  # back off a little, as a client honouring Retry-After would (shorter)
                    await asyncio.sleep(self.rng.uniform(0.1, 0.5))
        finally:
            await self.http.aclose()

    # -- the kinds of request --

    def _image(self, formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP")) -> tuple[bytes, str]:
        side = self.rng.choice((32, 64, 96, 128, 192))
        fmt = self.rng.choice(formats)
        return self.payloads.images[(side, fmt)], fmt.lower()

    def _scale(self) -> int:
        return self.rng.choice((2, 3, 4))

    async def infer(self) -> Outcome:
        data, _ = self._image()
        body = {"image": base64.b64encode(data).decode(), "scale_factor": self._scale()}
        return await timed("infer", self.http.post("/infer", json=body))

    async def upscale(self) -> Outcome:
        data, fmt = self._image()
        return await timed("upscale", self.http.post(
            "/upscale", files={"image": (f"in.{fmt}", data, f"image/{fmt}")}, data={"scale_factor": self._scale()}))

    async def geotiff(self) -> Outcome:
        data = self.rng.choice(self.payloads.tiffs)
        return await timed("geotiff", self.http.post(
            "/upscale", files={"image": ("scene.tif", data, "image/tiff")}, data={"scale_factor": 2}))

    async def diffusion(self) -> Outcome:
        body = {"image": base64.b64encode(self.payloads.images[(32, "PNG")]).decode(), "scale_factor": 2,
                "ddim_steps": 2, "seed": self.rng.randrange(1000)}
        return await timed("diffusion", self.http.post("/infer", json=body))

    async def corrupt(self) -> Outcome:
        data = self.rng.choice(self.payloads.corrupt)
        if self.rng.random() < 0.5:
            return await timed("corrupt", self.http.post(
                "/upscale", files={"image": ("broken.png", data, "image/png")}))
        image = self.rng.choice([base64.b64encode(data).decode(), "!!not base64!!"])
        return await timed("corrupt", self.http.post("/infer", json={"image": image}))

    async def bomb(self) -> Outcome:
        name, data = self.rng.choice(self.payloads.bombs)
        media_type = "image/tiff" if name.endswith(".tif") else "image/png"
        return await timed("bomb", self.http.post("/upscale", files={"image": (name, data, media_type)}))

    async def oversized(self) -> Outcome:
        """A body over the limit with its Content-Length: refused from the header."""
        return await timed("oversized", self.http.post(
            "/upscale", files={"image": ("huge.png", self.payloads.oversized, "image/png")}))

    async def oversized_streamed(self) -> Outcome:
        """A chunked body over the limit: counted while it streams."""
        async def chunks() -> AsyncIterator[bytes]:
            data = self.payloads.oversized
            for start in range(0, len(data), MB):
                yield data[start:start + MB]

        return await timed("oversized_streamed", self.http.post(
            "/infer", content=chunks(), headers={"content-type": "application/json"}))

    async def slow_upload(self) -> Outcome:
        """A valid request whose body arrives in ten pieces over about two seconds."""
        data, _ = self._image(("PNG",))
        body = json.dumps({"image": base64.b64encode(data).decode(), "scale_factor": 2}).encode()

        async def trickle() -> AsyncIterator[bytes]:
            step = len(body) // 10 + 1
            for start in range(0, len(body), step):
                yield body[start:start + step]
                await asyncio.sleep(0.2)

        headers = {"content-type": "application/json"}
        if self.rng.random() < 0.5:  # half declare their length, half are chunked
            headers["content-length"] = str(len(body))
        return await timed("slow_upload", self.http.post("/infer", content=trickle(), headers=headers))

    async def slow_reader(self) -> Outcome:
        """A valid request whose answer is read 16 KB at a time, slowly."""
        data, fmt = self._image(("PNG",))
        started = time.monotonic()
        try:
            async with self.http.stream("POST", "/upscale", files={"image": (f"in.{fmt}", data, "image/png")},
                                        data={"scale_factor": 4}) as response:
                async for _ in response.aiter_raw(16 * 1024):
                    await asyncio.sleep(0.01)
                return outcome("slow_reader", response, started)
        except httpx.HTTPError as exc:
            return Outcome("slow_reader", None, time.monotonic() - started, started, f"{type(exc).__name__}: {exc}")

    async def abandoned(self) -> Outcome:
        """A large request the client gives up on mid-inference (the connection closes)."""
        body = {"image": base64.b64encode(self.payloads.abandon_image).decode(), "scale_factor": 4}
        patience = self.rng.uniform(0.3, 1.5)
        started = time.monotonic()
        try:
            response = await asyncio.wait_for(self.http.post("/infer", json=body), timeout=patience)
        except asyncio.TimeoutError:
            return Outcome("abandoned", None, time.monotonic() - started, started, abandoned=True)
        except httpx.HTTPError as exc:
            return Outcome("abandoned", None, time.monotonic() - started, started, f"{type(exc).__name__}: {exc}")
        return outcome("abandoned", response, started)


async def hammer(url: str, deadline: float, pause_s: float, outcomes: list[Outcome], gate: asyncio.Event) -> None:
    """Cheap POSTs from one address, paced, past the rate limit (then 429s). They go to /jobs without a
    form (415), where the queue depth does not shed them, so exactly the first ``rate_limit`` pass."""
    transport = httpx.AsyncHTTPTransport(local_address=HAMMER_ADDRESS, limits=CLIENT_LIMITS)
    async with httpx.AsyncClient(base_url=url, timeout=60, transport=transport) as http:
        while time.monotonic() < deadline:
            await gate.wait()
            outcomes.append(await timed("rate_limited", http.post("/jobs", json={"image": "!!"})))
            await asyncio.sleep(pause_s)


def outcome(kind: str, response: httpx.Response, started: float) -> Outcome:
    return Outcome(kind, response.status_code, time.monotonic() - started, started,
                   response.headers.get("x-error-code"))


async def timed(kind: str, request: Awaitable[httpx.Response]) -> Outcome:
    started = time.monotonic()
    try:
        response = await request
    except httpx.HTTPError as exc:
        return Outcome(kind, None, time.monotonic() - started, started, f"{type(exc).__name__}: {exc}")
    return outcome(kind, response, started)


# -- what each kind may be answered -------------------------------------------------------------------------

# Valid work is answered, shed, stopped at its deadline, or refused at once when the measured speed (the load
# included) puts it past the deadline.
VALID = {200, SHED, SLOW, TOO_SLOW}
DESIGNED: dict[str, set[int]] = {
    "infer": VALID, "upscale": VALID, "geotiff": VALID, "diffusion": VALID, "slow_upload": VALID,
    "slow_reader": VALID, "abandoned": VALID, "corrupt": {422, SHED}, "bomb": {413, SHED},
    "oversized": {413, SHED}, "oversized_streamed": {413, SHED}, "rate_limited": {415, 429}, "at_rest": {200},
}
NORMAL_SPEED = ("infer", "upscale", "geotiff", "diffusion")  # accepted latency without deliberate slowness


# -- the server's side --------------------------------------------------------------------------------------


@dataclass
class MemoryProbe:
    """The worker's resident memory every ``every_s`` seconds, in a thread of its own."""

    pid: int
    every_s: float = 1.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    lost: bool = False  # the worker went away (a restart would hide a leak and lose requests)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self.every_s):
            rss = rss_bytes(self.pid)
            if rss is None:
                self.lost = True
                return
            self.samples.append((time.monotonic() - start, rss))

    def window_mb(self, start_s: float, end_s: float) -> float:
        values = [rss for t, rss in self.samples if start_s <= t <= end_s]
        return statistics.median(values) / MB if values else float("nan")


# -- the run ------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(np.ceil(q / 100 * len(ordered))) - 1))]


def latency_ms(outcomes: list[Outcome]) -> dict[str, float | int | None]:
    seconds = [o.seconds for o in outcomes]
    return {"count": len(seconds), **{f"p{q}": round(p * 1000, 1) if (p := percentile(seconds, q)) is not None
                                      else None for q in (50, 95, 99)}}


@dataclass
class Rest:
    """The worker at rest: its RSS, and with ``--census`` its objects and heap (``benchmarks/census``)."""

    at_s: float
    rss_mb: float
    census: dict | None = None


async def drive(url: str, args: argparse.Namespace, payloads: Payloads, worker: int, census: Path | None
                ) -> tuple[list[Outcome], list[Rest]]:
    """The outcomes, and the worker at rest once warm, every ``--rest-every`` seconds after, and at the end."""
    outcomes: list[Outcome] = []
    gate = asyncio.Event()
    gate.set()
    deadline = time.monotonic() + args.duration
    only = set(args.kinds.split(",")) if args.kinds else None
    clients = [Client(i, url, payloads, random.Random(args.seed * 1000 + i), args.rate_limit, outcomes, gate, only)
               for i in range(args.clients)]
    pause = args.duration / 2 / args.rate_limit  # the hammer passes the limit half-way through the run
    hammers = [hammer(url, deadline, pause, outcomes, gate)] if not only or "rate_limited" in only else []
    at_rest: list[Rest] = []
    started = time.monotonic()

    async def measure() -> None:
        rss = await rest_rss_mb(url, worker, payloads, outcomes)
        at_rest.append(Rest(round(time.monotonic() - started, 1), round(rss, 1),
                            await take_census(worker, census) if census else None))

    async def measure_while_running() -> None:
        await asyncio.sleep(args.warmup)
        while True:  # once warm, then every --rest-every seconds while the load lasts
            gate.clear()
            await measure()
            gate.set()
            if not args.rest_every or time.monotonic() + args.rest_every >= deadline:
                return
            await asyncio.sleep(args.rest_every)

    await asyncio.gather(*(c.run(deadline) for c in clients), *hammers, measure_while_running())
    await measure()
    return outcomes, at_rest


async def take_census(worker: int, folder: Path, timeout_s: float = 60) -> dict:
    """SIGUSR2 to the worker, whose ``benchmarks/census/sitecustomize.py`` writes one more census file."""
    before = set(folder.glob(f"census-{worker}-*.json"))
    os.kill(worker, signal.SIGUSR2)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = set(folder.glob(f"census-{worker}-*.json")) - before
        if new:
            return json.loads(new.pop().read_text())
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the worker wrote no census in {timeout_s:g} s (is benchmarks/census on its PYTHONPATH?)")


async def rest_rss_mb(url: str, worker: int, payloads: Payloads, outcomes: list[Outcome], readings: int = 3) -> float:
    """The worker's resident memory once it has settled at rest: what it keeps, not what the work of the moment
    holds (that swings by a few hundred MB). A small request (it must still be answered), then a pause past
    the worker's own settling after its last work (``InferenceRunner.settle_when_idle``: cyclic garbage
    collected, heap trimmed). The least of ``readings`` such readings: what is still settling only ever
    adds."""
    deadline = time.monotonic() + 120  # every request ends within REQUEST_TIMEOUT_S; abandoned ones at a tile
    while await asyncio.to_thread(active_requests, url) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    body = {"image": base64.b64encode(payloads.images[(32, "PNG")]).decode(), "scale_factor": 2}
    found = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for _ in range(readings):
            outcomes.append(await timed("at_rest", http.post("/infer", json=body)))
            await asyncio.sleep(SETTLED_AFTER_S)
            found.append((rss_bytes(worker) or 0) / MB)
    return min(found)


def soak(args: argparse.Namespace) -> dict:
    payloads = Payloads.make(args.seed, int(args.max_payload_mb * MB))
    env = {"MAX_QUEUE_DEPTH": str(args.queue_depth), "RATE_LIMIT_PER_HOUR": str(args.rate_limit),
           "MAX_PAYLOAD_MB": str(args.max_payload_mb)}
    with tempfile.TemporaryDirectory(prefix="hndsr-soak-") as work:
        env["JOBS_DIR"] = str(Path(work) / "jobs")
        census = Path(work) / "census" if args.census else None
        if census:
            census.mkdir()
            env["HNDSR_CENSUS_DIR"] = str(census)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CENSUS_HOOK), os.environ.get("PYTHONPATH")]))
        with local_server(env, Path(args.log) if args.log else None) as (url, server):
            worker = worker_pid(server)
            if worker is None:
                raise RuntimeError("the server has no worker process")
            before = requests_by_status(url, ENDPOINTS)
            with MemoryProbe(worker) as memory:
                started = time.monotonic()
                outcomes, at_rest = asyncio.run(drive(url, args, payloads, worker, census))
                elapsed = time.monotonic() - started
            served = requests_by_status(url, ENDPOINTS) - before
            same_worker = worker_pid(server) == worker and not memory.lost
    return report(args, outcomes, served, memory, at_rest, elapsed, same_worker)


def report(args: argparse.Namespace, outcomes: list[Outcome], served: Counter, memory: MemoryProbe,
           at_rest: list[Rest], elapsed: float, same_worker: bool) -> dict:
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        by_kind[o.kind][str(o.status) if o.status is not None else ("abandoned" if o.abandoned else "no answer")] += 1
    answered = Counter(o.status for o in outcomes if o.status is not None)
    abandoned = sum(o.abandoned for o in outcomes)
    problems = [f"{o.kind}: {o.status} {o.error}" for o in outcomes
                if o.status is not None and o.status not in DESIGNED[o.kind]]
    problems += [f"{o.kind}: transport error {o.error}" for o in outcomes if o.status is None and not o.abandoned]
    # Each abandoned request is counted by the server under whatever it answered to nobody; every answer
    # the client saw must be there too.
    unexplained = {s: served[s] - answered[s] for s in set(served) | set(answered) if served[s] < answered[s]}
    if unexplained or sum(served.values()) - sum(answered.values()) != abandoned:
        problems.append(f"metrics disagree with the client: server {dict(served)}, client {dict(answered)} "
                        f"+ {abandoned} abandoned")
    # Under load: medians over a fifth of the run each, after warm-up and at the end (reported). At rest:
    # what the worker keeps (checked).
    window = max(10.0, 0.2 * args.duration)
    after_warmup = memory.window_mb(args.warmup, args.warmup + window)
    at_end = memory.window_mb(elapsed - window, elapsed)
    growth = at_rest[-1].rss_mb - at_rest[0].rss_mb
    if not growth < args.max_growth_mb:
        problems.append(f"worker memory at rest grew {growth:.1f} MB after warm-up (limit {args.max_growth_mb:g} MB)")
    if not same_worker:
        problems.append("the worker process was replaced during the run")
    accepted = [o for o in outcomes if o.status == 200]
    return {
        "duration_s": round(elapsed, 1), "clients": args.clients, "queue_depth": args.queue_depth,
        "rate_limit_per_hour": args.rate_limit, "requests": len(outcomes),
        "statuses": {kind: dict(c) for kind, c in sorted(by_kind.items())},
        "client_answers": {str(s): n for s, n in sorted(answered.items())}, "abandoned": abandoned,
        "server_requests_total": {str(s): n for s, n in sorted(served.items())},
        "latency_ms_accepted": latency_ms([o for o in accepted if o.kind in NORMAL_SPEED]),
        "latency_ms_accepted_by_kind": {k: latency_ms([o for o in accepted if o.kind == k])
                                        for k in sorted({o.kind for o in accepted})},
        "worker_rss_mb": {"start": round(memory.samples[0][1] / MB, 1) if memory.samples else None,
                          "at_rest_after_warmup": at_rest[0].rss_mb, "at_rest_end": at_rest[-1].rss_mb,
                          "growth_at_rest": round(growth, 1),
                          "under_load_after_warmup": round(after_warmup, 1), "under_load_end": round(at_end, 1),
                          "max": round(max(r for _, r in memory.samples) / MB, 1) if memory.samples else None},
        "at_rest": [asdict(rest) for rest in at_rest],
        "rss_samples": [(round(t, 1), round(r / MB, 1)) for t, r in memory.samples],
        "problems": problems[:50], "problem_count": len(problems),
    }


def print_report(result: dict) -> None:
    print(f"{result['requests']} requests in {result['duration_s']} s from {result['clients']} clients + 1 "
          f"rate-limited (MAX_QUEUE_DEPTH {result['queue_depth']}, RATE_LIMIT_PER_HOUR "
          f"{result['rate_limit_per_hour']})")
    for kind, statuses in result["statuses"].items():
        print(f"  {kind:<20} {statuses}")
    lat = result["latency_ms_accepted"]
    print(f"accepted ({lat['count']} at normal speed): p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms")
    for kind, lat in result["latency_ms_accepted_by_kind"].items():
        print(f"  {kind:<20} n={lat['count']:<5} p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms")
    rss = result["worker_rss_mb"]
    print(f"worker RSS MB: start {rss['start']}; at rest after warm-up {rss['at_rest_after_warmup']}, at the end "
          f"{rss['at_rest_end']}: growth {rss['growth_at_rest']} MB; under load (medians) after warm-up "
          f"{rss['under_load_after_warmup']}, at the end {rss['under_load_end']}; max {rss['max']}")
    for rest in result["at_rest"]:
        line = f"  at rest at {rest['at_s']:g} s: {rest['rss_mb']} MB"
        if rest["census"] and "mallinfo2" in rest["census"]:
            census, heap = rest["census"], rest["census"]["mallinfo2"]
            line += (f"; {census['gc_objects']:,} Python objects; malloc: {heap['uordblks'] / MB:.1f} MB in use, "
                     f"{heap['fordblks'] / MB:.1f} MB free in its arenas, {heap['hblkhd'] / MB:.1f} MB mmapped")
        print(line)
    print(f"server hndsr_requests_total ({', '.join(ENDPOINTS)}): {result['server_requests_total']}")
    print(f"client answers: {result['client_answers']} + {result['abandoned']} abandoned")
    print(f"{result['problem_count']} problems" + "".join(f"\n  {p}" for p in result["problems"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (above --queue-depth)")
    parser.add_argument("--queue-depth", type=int, default=20, help="the server's MAX_QUEUE_DEPTH")
    parser.add_argument("--rate-limit", type=int, default=100, help="the server's RATE_LIMIT_PER_HOUR")
    parser.add_argument("--max-payload-mb", type=float, default=20, help="the server's MAX_PAYLOAD_MB")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up, after which the "
                        "worker's memory is first measured at rest (default: a quarter of the run)")
    parser.add_argument("--max-growth-mb", type=float, default=50, help="worker memory growth allowed after warm-up")
    parser.add_argument("--rest-every", type=float, default=0, help="after warm-up, pause the clients and "
                        "measure the worker at rest every this many seconds too (0: once warm and at the end only)")
    parser.add_argument("--census", action="store_true", help="at rest, also count the worker's Python objects "
                        "by type and read glibc's heap statistics (benchmarks/census/sitecustomize.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=None, help="only these kinds of request, comma-separated "
                        "(e.g. infer,upscale: to narrow down a leak)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--log", default=None, help="the server's log file")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = args.duration / 4
    result = soak(args)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=asdict))
    sys.exit(1 if result["problem_count"] else 0)

