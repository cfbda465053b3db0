"""The model and the pipeline in process, without the server: the figures a GPU machine can give with torch,
NumPy and Pillow alone (``scripts/serving_benchmark.py`` imports these for its side-by-side tables).

    python scripts/inprocess_benchmark.py --device cuda [--repeats 20] [--threads 1 4 16 32] [--scene-size 8192]

Prints the operator alone (one 256x256 tile, batches of 8/16/32 tiles, fp32 and bf16 autocast),
``upscale`` of a 256x256 image at x4 called from 1..32 threads (requests/s, p50, p99), with and without
Pillow's PNG encoding at level 1, and a big scene at x2 (output megapixels/s), with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from benchmarks.common import load_average, mosaic, test_image
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.timing import median_seconds
from hndsr_model.weights import DEFAULT_WEIGHTS

SCALE = 4


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Load:
    """What concurrent callers saw: requests (and failures), requests/s, latency percentiles in ms."""

    requests: int
    errors: int
    per_second: float
    p50_ms: float
    p99_ms: float
    server_p50_ms: float | None = None  # HTTP: the median inference time the server reported (header, JSON)

    @classmethod
    def of(cls, latencies: list[float], errors: int, seconds: float) -> Load:
        ordered = sorted(latencies)
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]  # nearest rank
        return cls(len(ordered), errors, len(ordered) / seconds, statistics.median(ordered) * 1000, p99 * 1000)

    def row(self, label: str) -> str:
        failed = f"  ({self.errors} failed)" if self.errors else ""
        server = f"   server inference p50 {self.server_p50_ms:6.1f} ms" if self.server_p50_ms is not None else ""
        return (f"  {label:34s} {self.per_second:7.2f} req/s   p50 {self.p50_ms:8.1f} ms   p99 {self.p99_ms:8.1f} ms"
                f"{server}   n={self.requests}{failed}")


def model_only(pipeline: HNDSRPipeline, repeats: int, batch: int | None = None, bf16: bool = False
               ) -> dict[str, float]:
    """The operator alone on the device: one tile, and one batch of ``batch`` (default ``tile_batch``) tiles."""
    batch = batch or pipeline.tile_batch
    one = torch.rand(1, 3, 256, 256, device=pipeline.device)
    many = torch.rand(batch, 3, 256, 256, device=pipeline.device)
    autocast = (lambda: torch.autocast(pipeline.device.type, torch.bfloat16)) if bf16 else contextlib.nullcontext

    def forward(tiles: torch.Tensor) -> Callable[[], None]:
        def call() -> None:
            with torch.inference_mode(), autocast():
                pipeline.model.operator(tiles, SCALE)
            synchronize(pipeline.device)
        return call

    tile_s = median_seconds(forward(one), repeats)
    batch_s = median_seconds(forward(many), repeats)
    return {"tile_ms": tile_s * 1000, "batch": batch, "batch_tiles_per_s": batch / batch_s}


def upscale_load(pipeline: HNDSRPipeline, image: np.ndarray, threads: int, requests: int,
                 encode: Callable[[np.ndarray], bytes] | None = None) -> Load:
    """``threads`` callers of ``upscale`` (then ``encode`` of its output, if given), ``requests`` in all."""

    def one(_: int) -> float:
        started = time.perf_counter()
        output = pipeline.upscale(image, UpscaleOptions(SCALE)).image
        if encode:
            encode(output)
        return time.perf_counter() - started

    one(0)  # warm-up
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        latencies = list(pool.map(one, range(requests)))
        return Load.of(latencies, 0, time.perf_counter() - started)


def big_scene(pipeline: HNDSRPipeline, size: int) -> dict[str, float]:
    tiles = math.ceil(size / 1024)
    image = np.ascontiguousarray(np.tile(mosaic(1024), (tiles, tiles, 1))[:size, :size])
    pipeline.upscale(image[:512, :512], UpscaleOptions(2))  # warm-up
    started = time.perf_counter()
    pipeline.upscale(image, UpscaleOptions(2))
    seconds = time.perf_counter() - started
    return {"size": size, "seconds": seconds, "output_mpx_per_s": (2 * size) ** 2 / 1e6 / seconds}


def pillow_encode(image: np.ndarray, **options: object) -> bytes:
    """``image`` saved by Pillow with ``options`` (``format=...`` and the format's own)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, **options)
    return buffer.getvalue()


def pillow_png(image: np.ndarray) -> bytes:
    return pillow_encode(image, format="PNG", compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--scene-size", type=int, default=8192)
    args = parser.parse_args()
    pipeline = HNDSRPipeline.from_pretrained(DEFAULT_WEIGHTS, device=args.device)
    device = pipeline.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"in process, {name}, model {pipeline.version}, tile_batch {pipeline.tile_batch}; {load_average()}",
          flush=True)
    report: dict[str, object] = {"device": name, "model_only": {}, "upscale": {}}
    for batch in args.batches:
        for bf16 in (False, True):
            figures = model_only(pipeline, args.repeats, batch, bf16)
            label = f"batch {batch} {'bf16' if bf16 else 'fp32'}"
            report["model_only"][label] = figures  # type: ignore[index]
            print(f"model only, {label}: one tile {figures['tile_ms']:.2f} ms, {figures['batch_tiles_per_s']:.0f} "
                  "tiles/s", flush=True)
    image = test_image(256)
    for encode in (None, pillow_png):
        for threads in args.threads:
            stats = upscale_load(pipeline, image, threads, max(2 * args.repeats, 4 * threads), encode)
            label = f"upscale{' + PNG' if encode else ''}, {threads} threads"
            report["upscale"][label] = asdict(stats)  # type: ignore[index]
            print(stats.row(label), flush=True)
    if args.scene_size:
        scene = big_scene(pipeline, args.scene_size)
        report["big_scene"] = scene
        print(f"big scene {args.scene_size}x{args.scene_size} x2: {scene['seconds']:.2f} s, "
              f"{scene['output_mpx_per_s']:.1f} output megapixels/s; {load_average()}", flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
