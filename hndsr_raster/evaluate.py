"""Quality on a georeferenced raster in its own units (16-bit, float, any band count).

    python -m hndsr_raster.evaluate ../shared/data/geotiff/spacenet_pan1_uint16.tif --scales 2 3 4

The evaluation protocol of the RGB benchmark, carried over to a raster's own units: HR = the raster
cropped top-left to a multiple of s; LR = Pillow's bicubic downscale of each band (computed in float,
rounded to the dtype); HNDSR goes through exactly the raster product the service and the CLI make
(scene-wide normalisation, nodata, band plan) and is compared with Pillow's bicubic upscale of the LR.
PSNR is per band in the data's units, with the peak = the HR band's range (max - min), ``s`` pixels
cropped from every border, averaged over bands.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from rasterio.io import MemoryFile

from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.weights import DEFAULT_WEIGHTS

from .scene import SceneUpscaler, open_raster


def resize_band(band: np.ndarray, width: int, height: int, dtype: np.dtype) -> np.ndarray:
    """Pillow bicubic (antialiased when shrinking) on float data, rounded and clipped to ``dtype``."""
    resized = np.asarray(Image.fromarray(band.astype(np.float32), mode="F").resize((width, height), Image.BICUBIC))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(resized), info.min, info.max).astype(dtype)
    return resized.astype(dtype)


def psnr(reference: np.ndarray, output: np.ndarray, border: int) -> float:
    ref = reference[border:-border, border:-border].astype(np.float64)
    out = output[border:-border, border:-border].astype(np.float64)
    peak = ref.max() - ref.min()
    mse = np.mean((ref - out) ** 2)
    return float(10 * np.log10(peak**2 / mse)) if mse else float("inf")


def evaluate(pipeline: HNDSRPipeline, path: Path, scale: int) -> dict[str, float]:
    with open_raster(path) as src:
        hr = src.read()
        profile = src.profile
    height, width = (hr.shape[1] // scale) * scale, (hr.shape[2] // scale) * scale
    hr = hr[:, :height, :width]
    lr = np.stack([resize_band(b, width // scale, height // scale, hr.dtype) for b in hr])
    bicubic = np.stack([resize_band(b, width, height, hr.dtype) for b in lr])
    profile.update(width=width // scale, height=height // scale, transform=profile["transform"]
                   * profile["transform"].scale(scale), driver="GTiff", tiled=False)
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    with MemoryFile() as mem, tempfile.TemporaryDirectory() as tmp:
        with mem.open(**profile) as dst:
            dst.write(lr)
        with mem.open() as lr_src:
            out = Path(tmp) / "sr.tif"
            SceneUpscaler(pipeline, lr_src, UpscaleOptions(scale, consistency=False)).write(out)  # as the benchmark
        with open_raster(out) as sr_src:
            sr = sr_src.read()
    hndsr = float(np.mean([psnr(h, s, scale) for h, s in zip(hr, sr, strict=True)]))
    base = float(np.mean([psnr(h, b, scale) for h, b in zip(hr, bicubic, strict=True)]))
    return {"scale": scale, "bicubic_psnr_db": round(base, 3), "hndsr_psnr_db": round(hndsr, 3),
            "gain_db": round(hndsr - base, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster", type=Path)
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args()
    pipeline = HNDSRPipeline.from_pretrained(args.weights, device=args.device)
    results = [evaluate(pipeline, args.raster, scale) for scale in args.scales]
    print(json.dumps({"raster": args.raster.name, "model_version": pipeline.version, "results": results}, indent=2))


if __name__ == "__main__":
    main()
