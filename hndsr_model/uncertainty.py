"""A per-pixel uncertainty map: how far the output's luminance is likely to be from the truth.

The map is the standard deviation sigma of the output's BT.601 luma (``0.299 R + 0.587 G + 0.114 B`` of
intensities in [0, 1]), one float per output pixel. :class:`UncertaintyHead` predicts it from what the
operator already computed (its LR feature map and its HR output), trained with a Gaussian likelihood on
the frozen operator's errors (``train.uncertainty_loss``). Its raw sigma is then calibrated per scale on
training patches (:func:`calibration_factor`), so that the true error lies within 2 sigma for about 95 %
of pixels, as it would for a Gaussian. With diffusion sampling the spread of seeded samples is added in
quadrature (:func:`combine`): sampled texture is a guess, and the samples say how much they disagree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .diffusion import UNSHUFFLE, encode_condition

LUMA = (0.299, 0.587, 0.114)
# log sigma is kept within [exp(-9), 1]: below the uint8 quantisation step, above any error in [0, 1].
LOG_SIGMA_RANGE = (-9.0, 0.0)
# 2 sigma covers 95.4 % of a Gaussian: calibration aims there.
COVERAGE = 0.954


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W) -> (B, 1, H, W)`` BT.601 luma of intensities in [0, 1]."""
    weights = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device)[None, :, None, None]
    return (rgb * weights).sum(dim=1, keepdim=True)


class UncertaintyHead(nn.Module):
    """``features (B, C, h, w), sr (B, 3, s*h, s*w), s -> log sigma (B, 1, s*h, s*w)``.

    Works at a quarter of the HR resolution, like the denoiser: the operator's output is pixel-unshuffled
    by 4 (48 channels) and the LR features, reduced to a few channels, are resized onto that grid; three
    3x3 convolutions (the scale enters as a per-channel bias) predict the 16 log sigmas of each 4x4 block.
    """

    def __init__(self, feature_channels: int = 48, reduced: int = 16, channels: int = 32) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(feature_channels, reduced, 1)
        self.conv1 = nn.Conv2d(reduced + 3 * UNSHUFFLE**2, channels, 3, padding=1)
        self.scale_bias = nn.Linear(1, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, UNSHUFFLE**2, 3, padding=1)
        # Start from a flat, plausible sigma (about 5 grey levels) rather than from noise.
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, -4.0)

    def forward(self, features: torch.Tensor, sr: torch.Tensor, scale: int) -> torch.Tensor:
        cond = encode_condition(sr) * 2 - 1
        context = F.interpolate(self.reduce(features), size=cond.shape[-2:], mode="bilinear", align_corners=False)
        inv_scale = torch.full((sr.shape[0], 1), 1.0 / scale, device=sr.device, dtype=sr.dtype)
        h = F.gelu(self.conv1(torch.cat([cond, context], dim=1)) + self.scale_bias(inv_scale)[:, :, None, None])
        h = F.gelu(self.conv2(h))
        log_sigma = F.pixel_shuffle(self.out(h), UNSHUFFLE)[..., : sr.shape[-2], : sr.shape[-1]]
        return log_sigma.clamp(*LOG_SIGMA_RANGE)


def gaussian_nll(log_sigma: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood (constant dropped) of ``error`` under N(0, sigma^2)."""
    return (log_sigma + 0.5 * (error * torch.exp(-log_sigma)) ** 2).mean()


def calibration_factor(sigma: torch.Tensor, error: torch.Tensor, coverage: float = COVERAGE) -> float:
    """The factor ``c`` for which ``|error| <= 2 c sigma`` holds for ``coverage`` of the pixels."""
    ratio = (error.abs() / sigma).flatten().float()
    if ratio.numel() > 2**24:  # torch.quantile's limit; an even subsample keeps the estimate
        ratio = ratio[:: -(-ratio.numel() // 2**24)]
    return float(torch.quantile(ratio, coverage)) / 2


def combine(head_sigma: torch.Tensor, samples_luma: torch.Tensor | None) -> torch.Tensor:
    """The map: the head's calibrated sigma ``(B, 1, H, W)``, with the variance of seeded diffusion samples
    ``(B, K, H, W)`` added where there are samples."""
    if samples_luma is None or samples_luma.shape[1] < 2:
        return head_sigma
    return (head_sigma**2 + samples_luma.var(dim=1, keepdim=True)).sqrt()
