"""Decode and guard input images, encode outputs.

Dimensions are read from the file header and checked against the pixel limit before any pixel is
decoded, so a decompression bomb costs a header read. TIFFs (GeoTIFF included: uint8/uint16/float,
1-N bands) go through tifffile; PNG, JPEG and WebP through Pillow. Every failure is a
:class:`ServiceError` with the right status.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from .errors import ServiceError

PILLOW_FORMATS = ("PNG", "JPEG", "WEBP")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
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


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise invalid_image(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ServiceError(413, "image_too_large",
                           f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")


def check_output(width: int, height: int, scale: int, max_output_pixels: int) -> None:
    out = width * height * scale * scale
    if out > max_output_pixels:
        raise ServiceError(413, "output_too_large", f"x{scale} of {width}x{height} gives {out:,} output pixels; "
                           f"the limit is {max_output_pixels:,}")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image file bytes -> ``(H, W, 3) uint8`` RGB, with the pixel guard applied from the header."""
    if not data:
        raise invalid_image("image is empty")
    if data[:4] in TIFF_MAGIC:
        return _decode_tiff(data, max_pixels)
    return _decode_pillow(data, max_pixels)


def _decode_pillow(data: bytes, max_pixels: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as img:
            check_pixels(img.width, img.height, max_pixels)
            img.load()
            if img.mode in ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr"):
                return np.asarray(img.convert("RGB"))
            return to_rgb8(np.asarray(img))
    except ServiceError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own header check, for the very largest claims
        raise ServiceError(413, "image_too_large", str(exc)) from None
    except UnidentifiedImageError:
        raise invalid_image("not a supported image (PNG, JPEG, TIFF, WebP)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise invalid_image(f"image data is corrupt or truncated: {exc}") from None


def _decode_tiff(data: bytes, max_pixels: int) -> np.ndarray:
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            check_pixels(page.imagewidth, page.imagelength, max_pixels)
            array = page.asarray()
            axes = page.axes
    except ServiceError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files; all are the client's
        raise invalid_image(f"TIFF could not be decoded: {exc}") from None
    if axes.startswith("S"):  # planar storage: bands first
        array = np.moveaxis(array, 0, -1)
    return to_rgb8(array)


def to_rgb8(array: np.ndarray) -> np.ndarray:
    """Any ``(H, W)`` or ``(H, W, bands)`` raster -> ``(H, W, 3) uint8``.

    One band is repeated to grey, more than three keep the first three; data that is not uint8 is
    stretched per band between its 2nd and 98th percentiles, the usual quick-look for 16-bit and
    reflectance imagery.
    """
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise invalid_image(f"unsupported raster shape {array.shape}")
    bands = array[..., :3] if array.shape[2] >= 3 else np.repeat(array[..., :1], 3, axis=2)
    if bands.dtype == np.uint8:
        return np.ascontiguousarray(bands)
    values = np.nan_to_num(bands.astype(np.float64))
    low = np.percentile(values, 2, axis=(0, 1))
    high = np.percentile(values, 98, axis=(0, 1))
    scaled = (values - low) / np.maximum(high - low, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """``(H, W, 3) uint8`` -> PNG bytes (fast compression: encode time is latency)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
