"""Scene-wide radiometry: map a band's own units to the model's [0, 1] range and back.

Statistics come from the whole scene (a regular sample of it, as GDAL's approximate statistics are),
never from a tile, so every tile of a scene is scaled alike and tiles
cannot show seams. 8-bit bands keep the fixed 0..255 range the model was trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

SAMPLE_PIXELS = 1 << 22  # ~4 Mpx per band: percentiles within a grey level of the full scene's
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
ROWS_PER_READ = 1024


@dataclass(frozen=True)
class BandStats:
    low: float  # value mapped to 0
    high: float  # value mapped to 1
    fill: float  # normalised value given to nodata pixels before the model sees them

    def normalise(self, values: np.ndarray) -> np.ndarray:
        return (values.astype(np.float32) - np.float32(self.low)) / np.float32(self.high - self.low)

    def denormalise(self, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Back to the band's units and dtype, rounded for integers, clipped to the dtype's range."""
        restored = values * np.float32(self.high - self.low)  # in place from here: rows of a scene are large
        restored += np.float32(self.low)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            np.rint(restored, out=restored)
        else:
            info = np.finfo(dtype)
        np.clip(restored, info.min, info.max, out=restored)
        return restored.astype(dtype)


def scene_stats(src: DatasetReader, bands: tuple[int, ...]) -> dict[int, BandStats]:
    """Each band's normalisation, from the whole scene's valid pixels (one pass over the scene for all bands)."""
    samples = _valid_samples(src, bands)
    return {band: _stats(values, src.dtypes[band - 1]) for band, values in zip(bands, samples, strict=True)}


def _stats(values: np.ndarray, dtype: str) -> BandStats:
    if dtype == "uint8":
        low, high = 0.0, 255.0
    elif values.size:
        low, high = (float(v) for v in np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE]))
    else:  # nothing valid: the band is all nodata and its output will be too
        low, high = 0.0, 1.0
    high = high if high > low else low + 1.0
    fill = float(np.median(values)) if values.size else low
    return BandStats(low, high, (fill - low) / (high - low))


def _valid_samples(src: DatasetReader, bands: tuple[int, ...]) -> list[np.ndarray]:
    """Every ``step``-th valid pixel of each band over the whole scene, read by windows of whole rows.

    Rows are read at full resolution and strided in memory: each compressed block is decoded once, where
    GDAL's own decimated read of a tiled file without overviews decodes the blocks again for every output
    row (195 s instead of 7 s for one band of a 10980x10980 scene here).
    """
    step = max(1, math.ceil(math.sqrt(src.width * src.height / SAMPLE_PIXELS)))
    rows = step * max(1, ROWS_PER_READ // step)  # a multiple of step, so the stride runs on across windows
    parts = [src.read(list(bands), window=Window(0, y, src.width, min(rows, src.height - y)), masked=True)
             [:, ::step, ::step] for y in range(0, src.height, rows)]
    sample = np.ma.concatenate(parts, axis=1)
    values = [band.compressed().astype(np.float64) for band in sample]
    return [v[np.isfinite(v)] for v in values]
