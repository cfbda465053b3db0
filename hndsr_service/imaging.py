"""Decode and guard input images, encode outputs, with the service's error statuses.

Decoding is ``hndsr_model.data.read_image`` (shared with the CLI): dimensions come from the file
header and are checked against the pixel limit before any pixel is decoded, so a decompression bomb
costs a header read.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import io
import math
import os
import re
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from isal import isal_zlib
from PIL import Image

from hndsr_model.data import ImageDecodeError, ImageTooLarge, read_image
from hndsr_raster import array_to_tiff

from .errors import ServiceError

DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)


def invalid_image(detail: str) -> ServiceError:
    return ServiceError(422, "invalid_image", detail)


def decode_base64(text: str) -> bytes:
    """Strict base64 (a ``data:image/...;base64,`` prefix and whitespace allowed)."""
    payload = re.sub(r"\s+", "", DATA_URL.sub("", text.strip(), count=1))
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid_image(f"image is not valid base64: {exc}") from None


@contextlib.contextmanager
def image_errors() -> Iterator[None]:
    """The decoders' exceptions (images and rasters alike) as the service's statuses: 413 for too large,
    422 for unusable."""
    try:
        yield
    except ImageTooLarge as exc:
        raise ServiceError(413, "image_too_large", str(exc)) from None
    except ImageDecodeError as exc:
        raise invalid_image(str(exc)) from None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image file bytes -> ``(H, W, 3) uint8`` RGB; 413 over ``max_pixels``, 422 if not a usable image."""
    with image_errors():
        return read_image(data, max_pixels)


def check_output(width: int, height: int, scale: int, max_output_pixels: int) -> None:
    out = width * height * scale * scale
    if out > max_output_pixels:
        raise ServiceError(413, "output_too_large", f"x{scale} of {width}x{height} gives {out:,} output pixels; "
                           f"the limit is {max_output_pixels:,}")


OUTPUT_FORMATS = ("png", "jpeg", "webp", "tiff")
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "tiff": "image/tiff"}
# Encode time is latency (docs/throughput.md, 1024x1024 output): high-quality JPEG through Pillow's libjpeg-turbo
# (5 ms); lossless WebP at the least effort (quality 0 is 70 ms and no larger; the default effort took 0.6 s).
PILLOW_OPTIONS = {"jpeg": {"format": "JPEG", "quality": 95},
                  "webp": {"format": "WEBP", "lossless": True, "method": 0, "quality": 0}}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GREY, PNG_TRUECOLOUR = 0, 2  # the IHDR colour types
PNG_UP = 2  # row filter "Up": each byte minus the byte above it, mod 256 (zeros above the first row)
PNG_MAX_CHUNK = 2**31 - 1
ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, "fastest" level; 0x7801 is a multiple of 31 as zlib requires
DEFLATE_STRIP_BYTES = 256 * 2**10  # below this a strip's own cost and lost matches outweigh another core
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # "<quota> <period>" in microseconds, or "max <period>"


def output_format(requested: str | None, accept: str | None, input_is_tiff: bool) -> str:
    """The form field wins; then the ``Accept`` header (by quality, ``q=0`` ruling a type out); then the
    input's kind: GeoTIFF for a TIFF, PNG otherwise. 406 when the header rules out every format we make."""
    default = "tiff" if input_is_tiff else "png"
    if requested:
        return requested
    if not accept:
        return default
    weights = accepted_weights(accept)
    wanted = sorted((q, -i, fmt) for i, (fmt, q) in enumerate(weights.items()) if fmt in MEDIA_TYPES and q > 0)
    if wanted:
        return wanted[-1][2]
    if weights.get(default, weights.get("*", 1.0)) > 0:
        return default
    raise ServiceError(406, "not_acceptable", f"Accept rules out every format this service writes "
                       f"({', '.join(MEDIA_TYPES.values())})")


def accepted_weights(accept: str) -> dict[str, float]:
    """``Accept`` -> {format or "*": quality}; ``image/*`` and ``*/*`` count as "*"."""
    by_media = {media: fmt for fmt, media in MEDIA_TYPES.items()}
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (piece.strip().lower() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = min(max(float(param[2:]), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        key = "*" if media in ("*/*", "image/*") else by_media.get(media)
        if key:
            weights[key] = quality
    return weights


def encode(image: np.ndarray, fmt: str, uncertainty: np.ndarray | None = None) -> bytes:
    """``(H, W, 3)`` RGB or ``(H, W)`` grey ``uint8`` -> file bytes in ``fmt`` (a plain TIFF has no georeferencing
    to keep); a TIFF also carries ``uncertainty`` (``(H, W)`` float32) as its last band, which no other format can."""
    if fmt == "tiff":
        return array_to_tiff(image, uncertainty)
    if uncertainty is not None:
        raise ValueError(f"a {fmt} file cannot carry an uncertainty map")
    if fmt == "png":
        return encode_png(image)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, **PILLOW_OPTIONS[fmt])
    return buffer.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` or ``(H, W)`` ``uint8`` -> an 8-bit RGB or grey PNG: every row "Up"-filtered (one NumPy subtraction) and deflated
    by ISA-L at level 1, which releases the GIL while it works, in strips on the host's cores (:func:`deflate`).

    10-15 ms for a 1024x1024 super-resolved output in one strip, against 90-180 ms for Pillow at
    ``compress_level=1`` (which tries every filter on every row, then zlib) and 70 ms for libpng; and smaller
    than both. fpng was 6 ms but holds the GIL throughout (stalling the event loop) and 30 % larger
    (docs/throughput.md).
    """
    height, width = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    rows = np.ascontiguousarray(image).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = PNG_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps, as PNG's filters do
    data = memoryview(deflate(filtered))
    colour = PNG_TRUECOLOUR if channels == 3 else PNG_GREY
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)  # 8-bit, deflate, no interlace
    idat = [_png_chunk(b"IDAT", data[i : i + PNG_MAX_CHUNK]) for i in range(0, len(data), PNG_MAX_CHUNK)]
    return b"".join([PNG_SIGNATURE, _png_chunk(b"IHDR", header), *idat, _png_chunk(b"IEND", b"")])


def deflate(data: np.ndarray) -> bytes:
    """A zlib stream of ``data`` at level 1, deflated in strips at once on the host's cores, as pigz does: each
    strip a raw deflate stream of its own, all but the last ended by a sync flush (so no block is marked final),
    joined between the zlib header and the Adler-32 of the whole. A 1024x1024 output's PNG on 2 cores: 7.8 ms
    in two strips against 10.6-12.6 ms in one, 0.05 % larger (a strip starts without the previous one's window)."""
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    strips = min(_deflate_workers(), len(view) // DEFLATE_STRIP_BYTES)
    if strips <= 1:
        return isal_zlib.compress(view, 1)
    step = -(-len(view) // strips)
    pieces = [view[start : start + step] for start in range(0, len(view), step)]
    others = [_deflate_pool().submit(_deflate_strip, piece) for piece in pieces[:-1]]
    last = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)  # meanwhile this thread deflates the last strip
    tail = last.compress(pieces[-1]) + last.flush(isal_zlib.Z_FINISH)
    return b"".join([ZLIB_HEADER, *(strip.result() for strip in others), tail,
                     struct.pack(">I", isal_zlib.adler32(view))])


def _deflate_strip(piece: memoryview) -> bytes:
    strip = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)  # raw deflate: the header is written once
    return strip.compress(piece) + strip.flush(isal_zlib.Z_SYNC_FLUSH)


@functools.cache
def _deflate_workers() -> int:
    """The cores this process may use: its CPU set (a container's, say), and no more than its CPU quota (cgroup
    v2's ``cpu.max``, which a Kubernetes CPU limit sets), so a capped pod on a big node is not split 64 ways."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path(CGROUP_CPU_MAX).read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return cores


@functools.cache
def _deflate_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_deflate_workers() - 1 or 1, thread_name_prefix="png-deflate")


def _png_chunk(kind: bytes, data: bytes | memoryview) -> bytes:
    crc = isal_zlib.crc32(data, isal_zlib.crc32(kind))
    return b"".join([struct.pack(">I", len(data)), kind, data, struct.pack(">I", crc)])
