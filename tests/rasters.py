"""Small synthetic GeoTIFFs for the raster tests, written with rasterio, and the measures the tests share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

UTM = CRS.from_epsg(32631)
# 10 m pixels in UTM 31N: the kind of transform a real scene has.
NORTH_UP = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)
# A rotated grid (30 degrees) with a shear-free 10 m pixel: GDAL writes it as a geotransform with rotation terms.
ROTATED = Affine.translation(500_000.0, 5_000_000.0) @ Affine.rotation(30.0) @ Affine.scale(10.0, -10.0)


def smooth(height: int, width: int, bands: int = 1, seed: int = 0, low: float = 0.0, high: float = 255.0,
           dtype: str = "uint8") -> np.ndarray:
    """``(bands, H, W)`` smooth random values in ``[low, high]`` (bicubic-upsampled noise, like imagery)."""
    rng = np.random.default_rng(seed)
    out = np.empty((bands, height, width), np.float64)
    for b in range(bands):
        small = rng.random((max(2, height // 8), max(2, width // 8))).astype(np.float32)
        big = np.asarray(Image.fromarray(small, mode="F").resize((width, height), Image.BICUBIC), np.float64)
        big = (big - big.min()) / max(big.max() - big.min(), 1e-9)
        out[b] = low + big * (high - low)
    if np.issubdtype(np.dtype(dtype), np.integer):
        out = np.rint(out)
    return out.astype(dtype)


def write_raster(path: Path, data: np.ndarray, *, crs: CRS | None = UTM, transform: Affine | None = NORTH_UP,
                 nodata: float | None = None, colorinterp: Sequence[ColorInterp] | None = None,
                 mask: np.ndarray | None = None, tags: dict[str, str] | None = None,
                 band_tags: dict[int, dict[str, str]] | None = None,
                 descriptions: Sequence[str | None] | None = None, **profile: Any) -> Path:
    """Write ``(bands, H, W)`` ``data`` as a GeoTIFF with the given georeferencing and metadata."""
    count, height, width = data.shape
    options: dict[str, Any] = {"driver": "GTiff", "width": width, "height": height, "count": count,
                               "dtype": data.dtype.name, "nodata": nodata, "compress": "deflate", **profile}
    if crs is not None:
        options["crs"] = crs
    if transform is not None:
        options["transform"] = transform
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **options) as dst:
        dst.write(data)
        if colorinterp is not None:
            dst.colorinterp = list(colorinterp)
        if mask is not None:
            dst.write_mask(mask.astype(np.uint8) * 255)
        if tags:
            dst.update_tags(**tags)
        for band, values in (band_tags or {}).items():
            dst.update_tags(band, **values)
        for band, text in enumerate(descriptions or (), start=1):
            if text:
                dst.set_band_description(band, text)
    return path


def upsample(array: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour: each pixel of the last two axes repeated ``scale`` times."""
    return array.repeat(scale, axis=-2).repeat(scale, axis=-1)


def block_mean(array: np.ndarray, scale: int) -> np.ndarray:
    """The inverse of :func:`upsample` by averaging: ``(..., s*H, s*W) -> (..., H, W)``."""
    *lead, h, w = array.shape
    return array.reshape(*lead, h // scale, scale, w // scale, scale).astype(np.float64).mean(axis=(-3, -1))


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def corners(transform: Affine, width: int, height: int) -> list[tuple[float, float]]:
    return [transform @ (x, y) for x, y in ((0, 0), (width, 0), (0, height), (width, height))]
