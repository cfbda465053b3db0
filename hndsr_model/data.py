"""Image I/O and the evaluation protocol's degradation (HR crop, Pillow bicubic downscale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted for reproducibility."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


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
