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


# -- Real-pair scores of the Sentinel-2 community (ESA's opensr-test), implemented from its description ------------

CORRECTNESS_GAMMA = 0.8  # the slope of opensr-test's correctness scores


def block_mean(image: np.ndarray, scale: int) -> np.ndarray:
    """``(H, W, C)`` -> ``(H / s, W / s, C)`` float64: each ``s x s`` block's mean, the input pixel it covers."""
    h, w, c = image.shape[0] // scale, image.shape[1] // scale, image.shape[2]
    blocks = image[: h * scale, : w * scale].astype(np.float64).reshape(h, scale, w, scale, c)
    return blocks.mean(axis=(1, 3))


def reflectance_consistency(output: np.ndarray, lr: np.ndarray, scale: int) -> float:
    """Mean absolute difference, in the data's units, between the output averaged back to the input's grid and the
    input: 0 means the output keeps the input's radiometry exactly."""
    return float(np.mean(np.abs(block_mean(output, scale) - lr[: output.shape[0] // scale, : output.shape[1] // scale])))


def spectral_angle(output: np.ndarray, reference: np.ndarray, border: int) -> float:
    """Mean angle in degrees between each pixel's band vector in ``output`` and in ``reference`` (0: same spectra;
    a gain leaves it unchanged)."""
    a = _crop(output.astype(np.float64), border).reshape(-1, output.shape[2])
    b = _crop(reference.astype(np.float64), border).reshape(-1, reference.shape[2])
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    valid = norms > 0
    cosine = np.clip(np.sum(a * b, axis=1)[valid] / norms[valid], -1.0, 1.0)
    return float(np.degrees(np.mean(np.arccos(cosine))))


def correctness(sr: np.ndarray, lr_up: np.ndarray, hr: np.ndarray, sr_as_hr: np.ndarray, lr_up_as_hr: np.ndarray,
                scale: int, gamma: float = CORRECTNESS_GAMMA) -> dict[str, float]:
    """The shares (%) of input pixels the super-resolution improved, omitted (stayed like the upsampled input) or
    hallucinated (left both the input and the reference), after opensr-test.

    Per input pixel (an ``s x s`` block of the output), L1 distances over the bands: ``d_im`` from the output to the
    reference, ``d_om`` from the output to the upsampled input, both over ``d_ref``, the upsampled input's distance to
    the reference (pixels where that is 0 have nothing to improve and are left out). With ``H = d_im + d_om - 1``:
    improvement ``d_im + d_om (1 - exp(-gamma H))``, omission ``d_om + d_im (1 - exp(-gamma H))``, hallucination
    ``exp(-gamma d_im d_om)``; each pixel counts for its lowest score. Distances to the reference use ``sr_as_hr``
    and ``lr_up_as_hr``, the two put in the reference's radiometry (another sensor's), ``d_om`` the outputs as made.
    """
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return block_mean(np.abs(a.astype(np.float64) - b.astype(np.float64)), scale).mean(axis=2)

    reference = distance(lr_up_as_hr, hr)
    valid = reference > 0
    d_im = distance(sr_as_hr, hr)[valid] / reference[valid]
    d_om = distance(sr, lr_up)[valid] / reference[valid]
    h = d_im + d_om - 1
    scores = np.stack([d_im + d_om * (1 - np.exp(-gamma * h)), d_om + d_im * (1 - np.exp(-gamma * h)),
                       np.exp(-gamma * d_im * d_om)])
    shares = np.bincount(np.argmin(scores, axis=0), minlength=3) / max(int(valid.sum()), 1) * 100
    return {"improvement_pct": float(shares[0]), "omission_pct": float(shares[1]),
            "hallucination_pct": float(shares[2])}
