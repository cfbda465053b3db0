"""Each output encoder on a 1024x1024 super-resolved output: ms, MB, lossless or not, whether it holds the GIL,
with the alternatives that are installed (fpng, imagecodecs, opencv, simplejpeg).

    python -m benchmarks encoders [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.timing import median_seconds
from hndsr_service import imaging

from .common import SCALE, load_average, model_parser, pillow_encode, test_image


def pillow(image: np.ndarray, **options: object) -> Callable[[], bytes]:
    return lambda: pillow_encode(image, **options)


def optional_encoders(image: np.ndarray) -> dict[str, Callable[[], bytes]]:
    """Alternatives measured when their packages are installed (the service does not depend on them)."""
    found: dict[str, Callable[[], bytes]] = {}
    modules = {name: importlib.util.find_spec(name) for name in ("fpng", "imagecodecs", "cv2", "simplejpeg")}
    if modules["fpng"]:
        fpng = importlib.import_module("fpng")
        found["fpng"] = lambda: fpng.from_ndarray(image)
    if modules["imagecodecs"]:
        codecs = importlib.import_module("imagecodecs")
        found["imagecodecs png (libpng) level 1"] = lambda: codecs.png_encode(image, level=1)
    if modules["cv2"]:
        cv2 = importlib.import_module("cv2")
        bgr = np.ascontiguousarray(image[..., ::-1])
        found["opencv png level 1"] = lambda: cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    if modules["simplejpeg"]:
        simplejpeg = importlib.import_module("simplejpeg")
        found["simplejpeg q95"] = lambda: simplejpeg.encode_jpeg(image, quality=95, colorspace="RGB")
    return found


def gil_stall_ms(encode: Callable[[], bytes], calls: int = 10) -> float:
    """Median of how long a thread sleeping 0.2 ms takes to wake while ``encode`` runs: about the encode time
    when the encoder holds the GIL (an event loop stalls as long), well under a millisecond when it does not."""
    late: list[float] = []
    stop = threading.Event()

    def sleeper() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            time.sleep(0.0002)
            late.append(time.perf_counter() - started)

    thread = threading.Thread(target=sleeper)
    thread.start()
    for _ in range(calls):
        encode()
    stop.set()
    thread.join()
    return statistics.median(late) * 1000


def encoders(args: argparse.Namespace) -> None:
    image = HNDSRPipeline.from_pretrained(args.weights, device=args.device).upscale(test_image(256),
                                                                                    UpscaleOptions(SCALE)).image
    candidates = {
        "hndsr png (Up filter + ISA-L 1)": lambda: imaging.encode(image, "png"),
        "pillow png compress_level=1": pillow(image, format="PNG", compress_level=1),
        "hndsr jpeg (Pillow q95)": lambda: imaging.encode(image, "jpeg"),
        "hndsr webp lossless (quality 0)": lambda: imaging.encode(image, "webp"),
        "pillow webp lossless (quality 80)": pillow(image, format="WEBP", lossless=True, method=0),
        **optional_encoders(image),
    }
    print(f"encoders, {image.shape[1]}x{image.shape[0]} super-resolved output, medians of {args.repeats}; "
          f"{load_average()}")
    for name, encode in candidates.items():
        seconds = median_seconds(encode, args.repeats)
        data = encode()
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        exact = "lossless" if np.array_equal(decoded, image) else "lossy"
        print(f"  {name:36s} {seconds * 1000:7.1f} ms  {len(data) / 1e6:5.2f} MB  {exact:8s}  "
              f"GIL stall p50 {gil_stall_ms(encode):5.1f} ms", flush=True)
    print(load_average())


def main(argv: list[str] | None = None) -> int:
    parser = model_parser("encoders", __doc__)
    encoders(parser.parse_args(argv))
    return 0
