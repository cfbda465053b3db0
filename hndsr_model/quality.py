"""Image quality metrics of the evaluation protocol in ``shared/data/README.md``.

PSNR and SSIM are computed on the BT.601 luminance ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``
(R, G, B as 0-255 values), with ``border`` pixels cropped from every side.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def luminance(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8 -> (H, W) float64`` Y channel in [16, 235]."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def _crop(y: np.ndarray, border: int) -> np.ndarray:
    return y[border:-border, border:-border] if border > 0 else y


def y_psnr(output: np.ndarray, reference: np.ndarray, border: int) -> float:
    """PSNR in dB between the Y channels of two uint8 RGB images of equal size."""
    diff = _crop(luminance(output), border) - _crop(luminance(reference), border)
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g /= g.sum()
    return (g[:, None] * g[None, :])[None, None]


def y_ssim(output: np.ndarray, reference: np.ndarray, border: int) -> float:
    """SSIM (11x11 Gaussian window, sigma 1.5) between Y channels, valid region only."""
    window = _gaussian_window()
    x = torch.from_numpy(_crop(luminance(output), border))[None, None]
    y = torch.from_numpy(_crop(luminance(reference), border))[None, None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def gradient_energy_ratio(output: np.ndarray, reference: np.ndarray, border: int) -> float:
    """Mean squared Y gradient of ``output`` over that of ``reference`` (1.0 = as much texture as HR)."""

    def energy(img: np.ndarray) -> float:
        y = _crop(luminance(img), border)
        return float(np.mean(np.diff(y, axis=0) ** 2) + np.mean(np.diff(y, axis=1) ** 2))

    return energy(output) / energy(reference)
