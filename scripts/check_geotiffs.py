"""Super-resolve every GeoTIFF in folders as the service does and check each product as a GIS user would.

    python scripts/check_geotiffs.py ../shared/data/geotiff ../shared/data/geotiff/public --scale 2

For each raster: the product's CRS, bounds, dtype, band count and nodata against the input's, the
geotransform against ``transform * Affine.scale(1/s)``, rio-cogeo's COG validation, and the time; or the
designed refusal. Prints a Markdown table (docs/geotiff_checks.md keeps one).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from hndsr_model.data import ImageDecodeError
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_raster import SceneUpscaler, open_raster


def same_nodata(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def check(pipeline: HNDSRPipeline, path: Path, scale: int, folder: Path) -> str:
    out = folder / path.name
    started = time.perf_counter()
    try:
        with open_raster(path) as src:
            SceneUpscaler(pipeline, src, UpscaleOptions(scale)).write(out)
    except ImageDecodeError as exc:
        return f"| {path.name} | refused (422): {exc} |||||||"
    seconds = time.perf_counter() - started
    with rasterio.open(path) as src, rasterio.open(out) as dst:
        facts = [f"{src.width}×{src.height} {src.dtypes[0]} ×{src.count}",
                 dst.crs == src.crs, dst.bounds == src.bounds,
                 dst.transform.almost_equals(src.transform * Affine.scale(1 / scale)),
                 dst.dtypes == src.dtypes and dst.count == src.count, same_nodata(dst.nodata, src.nodata)]
    valid, errors, _ = cog_validate(out)
    facts += [valid or "; ".join(errors), f"{seconds:.1f}"]
    return f"| {path.name} | " + " | ".join("yes" if f is True else "NO" if f is False else str(f) for f in facts) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    pipeline = HNDSRPipeline.from_pretrained(device="cpu")
    print(f"| raster (x{args.scale}) | input | same CRS | same bounds | transform / {args.scale} | dtype & bands "
          "| nodata | valid COG | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for folder in args.folders:
            for path in sorted(folder.glob("*.tif")):
                print(check(pipeline, path, args.scale, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
