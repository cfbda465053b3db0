"""The model card's uncertainty picture: HR, HNDSR's x4 output, its absolute luma error and the map, side by side.

    .venv/bin/python scripts/uncertainty_figure.py [--image ../shared/data/rsscn7/val/gParking/g001.jpg] \
        [--scale 4] [--out docs/uncertainty_x4.jpg]

Error and sigma share one colour scale (black 0, white at the 99th percentile of the error), so where the
map is bright the error should be too. The protocol's pair: top-left crop, Pillow bicubic LR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hndsr_model.data import load_rgb, make_pair  # noqa: E402
from hndsr_model.evaluate import luma01  # noqa: E402
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline  # noqa: E402

# A perceptual dark-to-bright ramp (black, purple, orange, pale yellow), interpolated per channel.
RAMP = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], np.float64)


def colourise(values: np.ndarray, top: float) -> np.ndarray:
    """``(H, W)`` floats -> ``(H, W, 3)`` uint8 through :data:`RAMP`, 0 to ``top`` (clipped)."""
    t = np.clip(values / top, 0, 1) * (len(RAMP) - 1)
    low = np.floor(t).astype(int).clip(0, len(RAMP) - 2)
    frac = (t - low)[..., None]
    return (RAMP[low] * (1 - frac) + RAMP[low + 1] * frac).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, default=ROOT.parent / "shared/data/rsscn7/val/gParking/g001.jpg")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "uncertainty_x4.jpg")
    args = parser.parse_args()
    hr, lr = make_pair(load_rgb(args.image), args.scale)
    result = HNDSRPipeline.from_pretrained(device="cpu").upscale(lr, UpscaleOptions(args.scale, uncertainty=True))
    assert result.uncertainty is not None
    error = np.abs(luma01(result.image) - luma01(hr))
    top = float(np.percentile(error, 99))
    panels = {"HR": hr, f"HNDSR x{args.scale}": result.image, "|luma error|": colourise(error, top),
              "sigma (map)": colourise(result.uncertainty, top)}
    height, width = hr.shape[:2]
    sheet = Image.new("RGB", (len(panels) * (width + 8) - 8, height + 22), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, panel) in enumerate(panels.items()):
        sheet.paste(Image.fromarray(panel), (i * (width + 8), 22))
        draw.text((i * (width + 8) + 4, 5), title, fill="black")
    sheet.save(args.out, quality=90)
    coverage = float(np.mean(error <= 2 * result.uncertainty))
    print(f"wrote {args.out}: colour scale 0..{top:.3f} (luma), error within 2 sigma for {coverage:.1%} of pixels")


if __name__ == "__main__":
    main()
