"""Why learned models score below bicubic on the real Landsat-8 -> Sentinel-2 pairs: three diagnostics.

``python -m hndsr_model.evaluate --real-pairs`` scores each output as it is (and, with ``--register``, after
the bicubic output's best whole-pixel shift). This script asks what is behind those scores, per scene and
method (bicubic and each ``--weights``), with the evaluation's own radiometric match and Y-PSNR (9-px border):

1. **Sub-pixel registration, per method**: the shift (integer search over +-3 px, then quarter pixels around
   the best) that maximises each method's own Y-PSNR, applied by the Fourier shift theorem. A sharp output
   suffers more from a misregistered reference than a smooth one; if the learned models were only misaligned,
   their best-shift scores would pass bicubic's.
2. **Residual scale**: ``bicubic + a * (method - bicubic)`` for a in 0, 0.25 ... 1: whether what the model adds
   to bicubic helps in part (a peak inside) or not at all (the peak at 0).
3. **Frequency bands**: a Gaussian low-pass of ``--sigma`` HR px splits each output in two; the method's low band
   with bicubic's high band, and bicubic's low band with the method's high band, say which band helps or hurts.

(2) and (3) use the bicubic output's best sub-pixel shift for every method, so every method is scored against
the same, best-aligned reference grid::

    .venv/bin/python -m benchmarks real_pairs ../shared/data/geotiff \\
        --weights hndsr_model/weights/hndsr.safetensors hndsr_model/weights/hndsr-real.safetensors
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from hndsr_model.data import bicubic_upscale, load_rgb
from hndsr_model.evaluate import radiometric_match
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.quality import y_psnr

SCALE = 3
BORDER = 9  # the evaluation's 3 px plus the largest shift searched
COARSE = np.arange(-3.0, 3.01, 1.0)
FINE = np.arange(-0.75, 0.76, 0.25)


class Shiftable:
    """An output held as its spectrum, so that any sub-pixel shift is one phase ramp and an inverse FFT."""

    def __init__(self, image: np.ndarray) -> None:
        self.spectrum = np.fft.fft2(image.astype(np.float64), axes=(0, 1))
        height, width = image.shape[:2]
        self.fy = np.fft.fftfreq(height)[:, None, None]
        self.fx = np.fft.fftfreq(width)[None, :, None]

    def shifted(self, dy: float, dx: float) -> np.ndarray:
        ramp = np.exp(-2j * np.pi * (self.fy * dy + self.fx * dx))
        return np.fft.ifft2(self.spectrum * ramp, axes=(0, 1)).real


def score(image: np.ndarray, reference: np.ndarray) -> float:
    """The evaluation's Y-PSNR: radiometry matched per channel, uint8, then Y with the border."""
    return y_psnr(radiometric_match(np.clip(np.round(image), 0, 255), reference), reference, BORDER)


def best_shift(output: Shiftable, reference: np.ndarray) -> tuple[float, float, float]:
    """``(psnr, dy, dx)`` of the best shift: whole pixels first, then quarter pixels around the best."""
    def search(grid_y: np.ndarray, grid_x: np.ndarray) -> tuple[float, float, float]:
        return max((score(output.shifted(dy, dx), reference), float(dy), float(dx))
                   for dy, dx in itertools.product(grid_y, grid_x))

    _, dy, dx = search(COARSE, COARSE)
    return search(dy + FINE, dx + FINE)


def low_pass(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of ``sigma`` px (periodic; the border keeps the wrap out of every score)."""
    height, width = image.shape[:2]
    fy, fx = np.fft.fftfreq(height)[:, None, None], np.fft.fftfreq(width)[None, :, None]
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    return np.fft.ifft2(np.fft.fft2(image, axes=(0, 1)) * gain, axes=(0, 1)).real


def diagnose(outputs: dict[str, np.ndarray], reference: np.ndarray, sigma: float) -> dict[str, dict]:
    spectra = {name: Shiftable(image) for name, image in outputs.items()}
    report: dict[str, dict] = {}
    for name, spectrum in spectra.items():
        psnr, dy, dx = best_shift(spectrum, reference)
        report[name] = {"as_is": round(score(outputs[name], reference), 4),
                        "own_best_shift": {"psnr": round(psnr, 4), "dy": dy, "dx": dx}}
    dy, dx = (report["bicubic"]["own_best_shift"][axis] for axis in ("dy", "dx"))
    aligned = {name: spectrum.shifted(dy, dx) for name, spectrum in spectra.items()}
    bicubic = aligned["bicubic"]
    for name, image in aligned.items():
        if name == "bicubic":
            continue
        report[name]["residual_scale"] = {str(a): round(score(bicubic + a * (image - bicubic), reference), 4)
                                          for a in (0.0, 0.25, 0.5, 0.75, 1.0)}
        low, bicubic_low = low_pass(image, sigma), low_pass(bicubic, sigma)
        report[name]["bands"] = {"own_low_bicubic_high": round(score(low + bicubic - bicubic_low, reference), 4),
                                 "bicubic_low_own_high": round(score(bicubic_low + image - low, reference), 4)}
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="the folder of scene_*_Landsat-8.tif / scene_*_Sentinel-2.tif")
    p.add_argument("--weights", type=Path, nargs="+", required=True)
    p.add_argument("--sigma", type=float, default=2.0, help="the low-pass's Gaussian sigma, HR px")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    pipelines = {str(w): HNDSRPipeline.from_pretrained(w, device="cpu") for w in args.weights}
    names = {str(w): f"hndsr-{p.version}" for w, p in pipelines.items()}
    results = {}
    for low_path in sorted(args.folder.glob("scene_*_Landsat-8.tif")):
        scene = low_path.name.removesuffix("_Landsat-8.tif")
        lr, hr = load_rgb(low_path), load_rgb(low_path.with_name(f"{scene}_Sentinel-2.tif"))
        outputs = {"bicubic": bicubic_upscale(lr, SCALE)}
        outputs.update({names[w]: p.upscale(lr, UpscaleOptions(SCALE, consistency=False)).image
                        for w, p in pipelines.items()})  # the networks' own output, as diagnosed before the projection
        results[scene] = diagnose(outputs, hr, args.sigma)
        print(json.dumps({scene: results[scene]}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"sigma_hr_px": args.sigma, "border_px": BORDER, "results": results},
                                        indent=2) + "\n")

