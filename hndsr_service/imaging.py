"""Decode and guard input images, encode outputs, with the service's error statuses.

Decoding is ``hndsr_model.data.read_image`` (shared with the CLI): dimensions come from the file
header and are checked against the pixel limit before any pixel is decoded, so a decompression bomb
costs a header read.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np
from PIL import Image

from hndsr_model.data import ImageDecodeError, ImageTooLarge, read_image

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


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image file bytes -> ``(H, W, 3) uint8`` RGB; 413 over ``max_pixels``, 422 if not a usable image."""
    try:
        return read_image(data, max_pixels)
    except ImageTooLarge as exc:
        raise ServiceError(413, "image_too_large", str(exc)) from None
    except ImageDecodeError as exc:
        raise invalid_image(str(exc)) from None


def check_output(width: int, height: int, scale: int, max_output_pixels: int) -> None:
    out = width * height * scale * scale
    if out > max_output_pixels:
        raise ServiceError(413, "output_too_large", f"x{scale} of {width}x{height} gives {out:,} output pixels; "
                           f"the limit is {max_output_pixels:,}")


def encode_png(image: np.ndarray) -> bytes:
    """``(H, W, 3) uint8`` -> PNG bytes (fast compression: encode time is latency)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
