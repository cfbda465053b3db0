"""Batched, on-device degradations HR -> LR for training (CPU or GPU, same code).

``bicubic`` is the evaluation protocol's degradation (Pillow ``BICUBIC`` downscale, rounded to uint8):
torch's antialiased bicubic uses Pillow's kernel (a = -0.5) and support; run in Pillow's two rounded
passes it matches Pillow within one grey level (``tests/unit/test_degradation.py``). ``realistic`` adds what real sensors and archives
do, in the spirit of the BSRGAN/Real-ESRGAN pipelines: a random Gaussian point-spread function
(isotropic or anisotropic, rotated) on a 2x-oversampled grid, decimation without antialiasing, Gaussian
noise after it, and JPEG-style 8x8 DCT
quantisation (with 4:2:0 chroma), all drawn per sample from a seeded generator.

All functions take and return ``(B, 3, H, W)`` float tensors in 0-255.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ITU-T T.81 Annex K tables (the libjpeg defaults at quality 50).
JPEG_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)
JPEG_CHROMA = torch.full((8, 8), 99.0)
JPEG_CHROMA[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]])


@dataclass(frozen=True)
class RealisticSettings:
    """Ranges the realistic degradation draws from (per sample, uniformly)."""

    blur_sigma: tuple[float, float] = (0.2, 1.0)  # PSF sigma in LR pixels, before sampling
    anisotropic: float = 0.5  # probability that the PSF is anisotropic
    noise_sigma: tuple[float, float] = (0.0, 4.0)  # grey levels, after sampling
    jpeg_quality: tuple[int, int] = (50, 95)
    jpeg_probability: float = 0.5


def bicubic(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The protocol's LR: Pillow's bicubic downscale by ``scale``, as integers 0-255.

    Pillow resamples in two passes, horizontal then vertical, rounding and clipping to uint8 in
    between; doing the same (instead of one 2-D pass) takes the agreement from ~90 % of pixels with
    errors up to 6 grey levels to >99.5 % exact and never more than 1 off.
    """
    height, width = hr.shape[-2:]
    rows = F.interpolate(hr, size=(height, width // scale), mode="bicubic", antialias=True, align_corners=False)
    rows = rows.round().clamp(0, 255)
    lr = F.interpolate(rows, size=(height // scale, width // scale), mode="bicubic", antialias=True,
                       align_corners=False)
    return lr.round().clamp(0, 255)


def gaussian_kernels(sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised rotated Gaussian kernels ``(B, size, size)`` for per-sample ``sigma_x, sigma_y, theta``."""
    half = (size - 1) / 2
    coords = torch.arange(size, device=sigma_x.device, dtype=torch.float32) - half
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    u = cos * xx + sin * yy
    v = -sin * xx + cos * yy
    k = torch.exp(-0.5 * ((u / sigma_x[:, None, None]) ** 2 + (v / sigma_y[:, None, None]) ** 2))
    return k / k.sum(dim=(-2, -1), keepdim=True)


def blur(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-sample blur: ``(B, C, H, W)`` with ``(B, k, k)`` kernels, reflect padding."""
    batch, channels, height, width = images.shape
    pad = kernels.shape[-1] // 2
    padded = F.pad(images.reshape(1, batch * channels, height, width), (pad, pad, pad, pad), mode="reflect")
    weight = kernels.repeat_interleave(channels, dim=0)[:, None]
    return F.conv2d(padded, weight, groups=batch * channels).view(batch, channels, height, width)


def target_sensor(hr: torch.Tensor, sigma: float) -> torch.Tensor:
    """``hr`` as a coarser target sensor would image it: an isotropic Gaussian PSF of ``sigma`` HR pixels.

    The PSF is sampled at whole pixels, so its MTF at frequency ``f`` is ``sum_k g(k) cos(2 pi f k) / sum_k g(k)``
    (per axis), not the continuous ``exp(-2 pi^2 sigma^2 f^2)``: at Nyquist 0.57 for sigma 0.5, 0.30 for 0.62,
    0.25 for 0.65 and 0.18 for 0.7. Sentinel-2's 10 m bands are specified at 0.15-0.30 there; RSSCN7's HR
    (Google Earth, 0.3-1 m, resampled) is sharper.
    """
    batch = hr.shape[0]
    sigmas = torch.full((batch,), sigma, device=hr.device)
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(hr.shape[-2:]) - 1) + 1)
    return blur(hr, gaussian_kernels(sigmas, sigmas, torch.zeros_like(sigmas), size))


def dct_matrix(size: int = 8) -> torch.Tensor:
    n = torch.arange(size, dtype=torch.float64)
    mat = torch.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size)) * math.sqrt(2 / size)
    mat[0] /= math.sqrt(2)
    return mat.float()


def jpeg_like(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG-style compression per sample: YCbCr, 4:2:0 chroma, 8x8 DCT quantised with libjpeg's tables."""
    batch, _, height, width = images.shape
    pad_h, pad_w = -height % 16, -width % 16
    x = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    q = quality.float().clamp(1, 100)
    factor = torch.where(q < 50, 5000 / q, 200 - 2 * q)[:, None, None, None, None]
    device = images.device
    y = _quantise(y[:, None] - 128, ((JPEG_LUMA.to(device) * factor + 50) / 100).floor().clamp(1, 255)) + 128
    chroma = _quantise(chroma, ((JPEG_CHROMA.to(device) * factor + 50) / 100).floor().clamp(1, 255))
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)  # libjpeg "fancy" upsampling
    cb, cr = chroma.unbind(1)
    y = y[:, 0]
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return rgb[..., :height, :width]


def _quantise(planes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """8x8 block DCT of ``(B, C, H, W)`` (multiples of 8), quantised by ``(B, 1, 1, 8, 8)`` tables, inverted."""
    batch, channels, height, width = planes.shape
    d = dct_matrix().to(planes.device)
    blocks = planes.view(batch, channels, height // 8, 8, width // 8, 8).transpose(3, 4)
    coeff = d @ blocks @ d.T
    coeff = torch.round(coeff / table[:, :, None]) * table[:, :, None]
    blocks = d.T @ coeff @ d
    return blocks.transpose(3, 4).reshape(batch, channels, height, width)


def realistic(
    hr: torch.Tensor, scale: int, generator: torch.Generator, settings: RealisticSettings = RealisticSettings()
) -> torch.Tensor:
    """Sensor-like LR: random Gaussian PSF, bicubic sampling, Gaussian noise, JPEG; integers 0-255."""
    batch = hr.shape[0]
    device = hr.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator, device=device)

    sigma_x = uniform(*settings.blur_sigma)
    aniso = torch.rand(batch, generator=generator, device=device) < settings.anisotropic
    sigma_y = torch.where(aniso, uniform(*settings.blur_sigma), sigma_x)
    theta = uniform(0, math.pi)
    # The PSF acts on a 2x-oversampled LR grid (cheap at any scale), which is then decimated without
    # an antialiasing filter, so the LR keeps a sensor's aliasing as well as its blur.
    height, width = hr.shape[-2] // scale, hr.shape[-1] // scale
    fine = F.interpolate(hr, size=(2 * height, 2 * width), mode="bicubic", antialias=True, align_corners=False)
    size = min(2 * math.ceil(6 * settings.blur_sigma[1]) + 1, 2 * (min(height, width) - 1) + 1)
    fine = blur(fine, gaussian_kernels(2 * sigma_x, 2 * sigma_y, theta, size))
    lr = F.interpolate(fine, size=(height, width), mode="bilinear", antialias=False, align_corners=False)
    lr = lr.round().clamp(0, 255)
    noise = uniform(*settings.noise_sigma)[:, None, None, None]
    lr = (lr + noise * torch.randn(lr.shape, generator=generator, device=device)).round().clamp(0, 255)
    quality = uniform(settings.jpeg_quality[0], settings.jpeg_quality[1] + 1).floor()
    use_jpeg = (torch.rand(batch, generator=generator, device=device) < settings.jpeg_probability)[:, None, None, None]
    compressed = jpeg_like(lr, quality).round().clamp(0, 255)
    return torch.where(use_jpeg, compressed, lr)
