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


def gmsd(output: np.ndarray, reference: np.ndarray, border: int) -> float:
    """Gradient magnitude similarity deviation (Xue et al., IEEE TIP 2014) on Y: 0 for identical images, larger
    is worse. A weight-free full-reference perceptual metric: the standard deviation of the per-pixel
    similarity of Prewitt gradient magnitudes, after the paper's 2x2 average downsampling."""
    prewitt = torch.tensor([[1.0, 0.0, -1.0]] * 3, dtype=torch.float64) / 3
    kernels = torch.stack([prewitt, prewitt.T])[:, None]

    def magnitude(img: np.ndarray) -> torch.Tensor:
        y = torch.from_numpy(_crop(luminance(img), border))[None, None]
        gradients = F.conv2d(F.avg_pool2d(y, 2), kernels)
        return gradients.pow(2).sum(dim=1).sqrt()

    m_out, m_ref = magnitude(output), magnitude(reference)
    c = 170.0  # the paper's constant for 0-255 intensities
    similarity = (2 * m_out * m_ref + c) / (m_out**2 + m_ref**2 + c)
    return float(similarity.std(unbiased=False))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array, ties sharing their mean rank (as Spearman's rho needs)."""
    ranks = np.empty(len(values))
    ranks[values.argsort(kind="stable")] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two equally sized arrays (flattened)."""
    return float(np.corrcoef(average_ranks(x.ravel()), average_ranks(y.ravel()))[0, 1])
