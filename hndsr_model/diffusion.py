"""Conditional residual denoiser: the opt-in texture stage of HNDSR.

It works on the residual the neural operator leaves (HR minus operator output), pixel-unshuffled by a
fixed factor of 4 so that every scale shares one network and each step costs about one LR-sized
convolution stack. ``encode_condition``, ``encode_residual`` and ``decode_residual`` are that encoding,
written once for training (``train.make_denoiser_loss``) and sampling (``pipeline``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

UNSHUFFLE = 4
RESIDUAL_CHANNELS = 3 * UNSHUFFLE * UNSHUFFLE


def _padded(image: torch.Tensor) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` by edge replication to multiples of ``UNSHUFFLE`` (training crops already are)."""
    height, width = image.shape[-2:]
    return F.pad(image, (0, -width % UNSHUFFLE, 0, -height % UNSHUFFLE), mode="replicate")


def encode_condition(sr: torch.Tensor) -> torch.Tensor:
    """The denoiser's condition: the operator output ``(B, 3, H, W)``, clamped to [0, 1] and unshuffled to
    ``(B, 48, ceil(H/4), ceil(W/4))``."""
    return F.pixel_unshuffle(_padded(sr.clamp(0, 1)), UNSHUFFLE)


def encode_residual(residual: torch.Tensor, residual_scale: float) -> torch.Tensor:
    """``x0`` of the diffusion: HR minus operator output ``(B, 3, H, W)``, unshuffled and divided by
    ``residual_scale`` (the residual's std on the training set) so that it has about unit variance."""
    return F.pixel_unshuffle(_padded(residual), UNSHUFFLE) / residual_scale


def decode_residual(x0: torch.Tensor, residual_scale: float, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`encode_residual`: ``(B, 48, h, w) -> (B, 3, height, width)``."""
    return F.pixel_shuffle(x0, UNSHUFFLE)[..., :height, :width] * residual_scale


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of continuous timesteps in [0, 1]: ``(B,) -> (B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
    angles = t[:, None].float() * 1000.0 * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """Conv-GELU-conv with FiLM from the (time, scale) embedding; ``(B, C, H, W) -> same``."""

    def __init__(self, channels: int, emb_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.gelu(self.conv1(x)) * (1 + gamma) + beta
        return x + self.conv2(F.gelu(h))


class ResidualDenoiser(nn.Module):
    """v-prediction denoiser.

    ``x_t (B, 48, H/4, W/4), cond (B, 48, H/4, W/4), t (B,) in [0, 1], scale -> v (B, 48, H/4, W/4)``
    where ``cond`` is the pixel-unshuffled operator output and ``x_t`` the noised, normalised,
    unshuffled residual.
    """

    def __init__(self, channels: int = 32, blocks: int = 2, emb_dim: int = 64) -> None:
        super().__init__()
        self.emb_dim = emb_dim
        self.embed = nn.Sequential(nn.Linear(emb_dim + 1, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim))
        self.head = nn.Conv2d(2 * RESIDUAL_CHANNELS, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(channels, emb_dim) for _ in range(blocks))
        self.tail = nn.Conv2d(channels, RESIDUAL_CHANNELS, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, scale: int) -> torch.Tensor:
        inv_scale = torch.full_like(t, 1.0 / scale)[:, None]
        emb = self.embed(torch.cat([timestep_embedding(t, self.emb_dim), inv_scale], dim=1))
        h = self.head(torch.cat([x_t, cond * 2 - 1], dim=1))
        for block in self.blocks:
            h = block(h, emb)
        return self.tail(F.gelu(h))
