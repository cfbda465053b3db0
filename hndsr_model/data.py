"""Image I/O and the evaluation protocol's degradation (HR crop, Pillow bicubic downscale).

``read_image`` is the one decoder the CLI, the evaluation and the service share: PNG, JPEG and WebP
through Pillow, TIFF/GeoTIFF (uint8/uint16/float, 1-N bands, chunky or planar) through tifffile. The
size is read from the header and checked before any pixel is decoded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}
PILLOW_FORMATS = ("PNG", "JPEG", "WEBP")
MAGIC = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"II*\x00": "image/tiff", b"MM\x00*": "image/tiff",
         b"II+\x00": "image/tiff", b"MM\x00+": "image/tiff"}


class ImageDecodeError(ValueError):
    """The bytes are not a supported image, or the file is damaged."""


class ImageTooLarge(ValueError):
    """The header announces more pixels than allowed."""


def sniff_media_type(head: bytes) -> str | None:
    """The image media type from a file's first bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((media for magic, media in MAGIC.items() if head.startswith(magic)), None)


def check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")


def read_image(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Image file bytes -> ``(H, W, 3) uint8`` RGB."""
    if not data:
        raise ImageDecodeError("image is empty")
    if sniff_media_type(data[:16]) == "image/tiff":
        return _read_tiff(data, max_pixels)
    return _read_pillow(data, max_pixels)


def _read_pillow(data: bytes, max_pixels: int | None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as img:
            check_pixels(img.width, img.height, max_pixels)
            img.load()
            if img.mode in ("I;16", "I;16B", "I", "F"):
                return to_rgb8(np.asarray(img))
            return np.asarray(img.convert("RGB"))
    except (ImageTooLarge, ImageDecodeError):
        raise
    except Image.DecompressionBombError:
        # Pillow refuses a header claiming over twice its MAX_IMAGE_PIXELS; the size is said as it is.
        width, height = _header_size(data)
        raise ImageTooLarge(f"image is {width}x{height} = {width * height:,} pixels"
                            + (f"; the limit is {max_pixels:,}" if max_pixels else "")) from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not a supported image (PNG, JPEG, TIFF, WebP)") from None
    except (OSError, ValueError, SyntaxError):  # Pillow reports damaged files with all three
        raise ImageDecodeError("image data is corrupt or truncated") from None


def _header_size(data: bytes) -> tuple[int, int]:
    """Width and height from the image's header alone: Pillow's format plugin, without ``Image.open``'s check
    against decompression bombs (nothing is decoded)."""
    Image.init()
    for name in PILLOW_FORMATS:
        factory, accept = Image.OPEN[name]
        if accept is None or accept(data[:16]):
            with factory(io.BytesIO(data)) as header:  # type: ignore[call-arg]
                return header.size
    raise ImageDecodeError("not a supported image (PNG, JPEG, TIFF, WebP)")


def _read_tiff(data: bytes, max_pixels: int | None) -> np.ndarray:
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            check_pixels(page.imagewidth, page.imagelength, max_pixels)
            array, axes = page.asarray(), page.axes
    except (ImageTooLarge, ImageDecodeError):
        raise
    except Exception:  # tifffile raises many types for damaged files
        raise ImageDecodeError("TIFF is damaged, truncated or in a layout this decoder does not read") from None
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
        raise ImageDecodeError(f"unsupported raster shape {array.shape}")
    bands = array[..., :3] if array.shape[2] >= 3 else np.repeat(array[..., :1], 3, axis=2)
    if bands.dtype == np.uint8:
        return np.ascontiguousarray(bands)
    values = np.nan_to_num(bands.astype(np.float64))
    low = np.percentile(values, 2, axis=(0, 1))
    high = np.percentile(values, 98, axis=(0, 1))
    scaled = (values - low) / np.maximum(high - low, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted for reproducibility."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB."""
    return read_image(Path(path).read_bytes())


def make_pair(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Protocol pair: HR cropped top-left to a multiple of ``scale``, LR by Pillow bicubic."""
    height, width = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    hr = hr[:height, :width]
    lr = Image.fromarray(hr).resize((width // scale, height // scale), Image.BICUBIC)
    return hr, np.asarray(lr)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The Pillow bicubic baseline every number is compared with."""
    height, width = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((width * scale, height * scale), Image.BICUBIC))
