"""HNDSR operator v3 (candidate): the hybrid trunk rebuilt from SPAN's blocks, for more dB per CPU millisecond.

The hybrid identity stays: global spectral mixing (v1's factorised Fourier layer) beside local convolutions at LR
resolution, scale FiLM, one arbitrary-scale decoder for x2-x8, output = bicubic + residual. The local path is
SPAN's (Wan et al., NTIRE 2024 efficient SR winner): per block, re-parameterisable 3x3 convolutions
(:class:`Conv3XC`) with SiLU between them and SPAN's parameter-free attention, ``(h + x) * (sigmoid(h) - 0.5)``.
There is no ESA: its pooling and upsampling cost CPU time out of proportion to its parameters.

:class:`Conv3XC` trains as an over-parameterised 1x1 -> 3x3 -> 1x1 chain plus a 1x1 skip, and always runs as the
one 3x3 convolution the chain is equivalent to: its kernel is composed from the branches at every call (cheap: the
weights, not the pixels), so training and inference compute the same function and the served network is plain
3x3 convolutions. :meth:`Conv3XC.collapse` makes that convolution once, for serving.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .operator import NeuralOperatorSR, SpectralMixing


class Conv3XC(nn.Module):
    """``(B, C, H, W) -> (B, C, H, W)``: a 3x3 convolution learnt as ``1x1 (C -> gC) . 3x3 . 1x1 (gC -> C) + 1x1``."""

    def __init__(self, channels: int, gain: int = 2) -> None:
        super().__init__()
        wide = channels * gain
        self.expand = nn.Conv2d(channels, wide, 1)
        self.spatial = nn.Conv2d(wide, wide, 3)
        self.reduce = nn.Conv2d(wide, channels, 1)
        self.skip = nn.Conv2d(channels, channels, 1)
        # The collapsed convolution: buffers, so they move with the module, but not in the state dict (the branches are)
        self.register_buffer("fused_weight", None, persistent=False)
        self.register_buffer("fused_bias", None, persistent=False)

    def composed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent 3x3 kernel ``(C, C, 3, 3)`` and bias ``(C,)``."""
        w1, w2, w3 = self.expand.weight[:, :, 0, 0], self.spatial.weight, self.reduce.weight[:, :, 0, 0]
        weight = torch.einsum("om,mnhw,ni->oihw", w3, w2, w1)
        inner = torch.einsum("mnhw,n->m", w2, self.expand.bias) + self.spatial.bias
        bias = w3 @ inner + self.reduce.bias + self.skip.bias
        weight = weight + F.pad(self.skip.weight, (1, 1, 1, 1))  # the 1x1 skip sits at the kernel's centre
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_weight is not None and not self.training:
            return F.conv2d(x, self.fused_weight, self.fused_bias, padding=1)
        weight, bias = self.composed()
        return F.conv2d(x, weight, bias, padding=1)

    @torch.no_grad()
    def collapse(self) -> None:
        """Serve the composed convolution in eval mode from now on, made once; training again drops it."""
        self.fused_weight, self.fused_bias = (t.detach().clone() for t in self.composed())

    def train(self, mode: bool = True) -> Conv3XC:
        if mode:  # the branches are about to change: a collapsed kernel would be stale
            self.fused_weight = self.fused_bias = None
        return super().train(mode)


class SpanBlock(nn.Module):
    """``(h + x) * (sigmoid(h) - 0.5)`` with ``h = convs(FiLM(conv(x) + spectral(x)))``; ``(B, C, H, W) -> same``."""

    def __init__(self, channels: int, modes: int, cond_dim: int, convs: int, spectral: bool) -> None:
        super().__init__()
        self.spectral = SpectralMixing(channels, modes) if spectral else None
        self.convs = nn.ModuleList(Conv3XC(channels) for _ in range(convs))
        self.film = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.convs[0](x)
        if self.spectral is not None:
            h = h + self.spectral(x)
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = h * (1 + gamma) + beta
        for conv in self.convs[1:]:
            h = conv(F.silu(h))
        return (h + x) * (torch.sigmoid(h) - 0.5)


class NeuralOperatorSRv3(NeuralOperatorSR):
    """HNDSR v3 operator: ``(B, 3, h, w) in [0, 1], s -> (B, 3, s*h, s*w)``, bicubic + residual.

    v1's head, scale conditioning, tail, decoder and forward pass around ``blocks`` :class:`SpanBlock` s of
    ``convs`` convolutions; ``spectral=False`` is the ablation without the Fourier layers.
    """

    def __init__(self, channels: int = 48, blocks: int = 4, modes: int = 12, cond_dim: int = 32, convs: int = 3,
                 spectral: bool = True) -> None:
        super().__init__(channels, 0, modes, cond_dim)  # v1's parts but its blocks
        self.body = nn.ModuleList(SpanBlock(channels, modes, cond_dim, convs, spectral) for _ in range(blocks))

    def collapse(self) -> NeuralOperatorSRv3:
        """Every :class:`Conv3XC` as its one convolution, for inference; returns ``self``."""
        for module in self.modules():
            if isinstance(module, Conv3XC):
                module.collapse()
        return self
