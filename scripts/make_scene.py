"""Mosaic a large test scene from a small real raster, by windows (for the scene-job benchmark).

    python scripts/make_scene.py /tmp/scene.tif --size 10980
        [--source ../shared/data/geotiff/spacenet_ms1_4band_float64.tif]

The source is mirrored tile by tile (so the mosaic has no hard edges), converted to uint16, and written
as a tiled, compressed 4-band GeoTIFF on the source's grid and CRS; bands 1-3 are labelled red, green,
blue (as a Sentinel-2 B4/B3/B2 stack would be) and band 4 "nir".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared/data/geotiff/spacenet_ms1_4band_float64.tif"


def mirrored_row(tile: np.ndarray, row: int, width: int) -> np.ndarray:
    """One row of tiles, each tile flipped so neighbours meet at mirror-image edges."""
    height = tile.shape[1]
    flipped = tile[:, ::-1] if row % 2 else tile
    strip = np.concatenate([flipped[:, :, ::-1] if i % 2 else flipped for i in range(-(-width // tile.shape[2]))],
                           axis=2)
    return strip[:, :height, :width]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    with rasterio.open(args.source) as src:
        tile = np.clip(np.rint(src.read()), 0, 65535).astype(np.uint16)[:4]
        profile = {"driver": "GTiff", "width": args.size, "height": args.size, "count": tile.shape[0],
                   "dtype": "uint16", "crs": src.crs, "transform": src.transform, "tiled": True,
                   "blockxsize": 512, "blockysize": 512, "compress": "deflate", "bigtiff": "if_safer"}
    with rasterio.open(args.output, "w", **profile) as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
        dst.set_band_description(4, "nir")
        for row, y in enumerate(range(0, args.size, tile.shape[1])):
            strip = mirrored_row(tile, row, args.size)[:, : args.size - y]
            dst.write(strip, window=Window(0, y, args.size, strip.shape[1]))
    print(f"wrote {args.output}: {args.size}x{args.size}, {tile.shape[0]} bands, uint16")


if __name__ == "__main__":
    main()
