"""HNDSR operator v2: the v1 hybrid trunk plus a local refinement stage before the decoder.

The trunk is v1's (``operator.py``): global spectral mixing and 3x3 convolutions at LR resolution,
scale FiLM. v2 strengthens the local path with residual local feature blocks in the style of the
NTIRE efficient-SR winners (RLFN's RLFB: stacked 3x3 convolutions with a residual, then enhanced
spatial attention, ESA), conditioned on the scale, and decodes with v1's arbitrary-scale decoder.
Output = bicubic(x) + residual, as in v1.

Every refinement block ends in a zero-initialised projection, so a fresh v2 computes exactly what
its trunk and decoder compute: v2 can start from v1's weights (:meth:`NeuralOperatorSRv2.load_v1`)
with v1's quality and only learn what the new blocks add.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .operator import NeuralOperatorSR, scale_embedding


class ESA(nn.Module):
    """Enhanced spatial attention (RLFN/RFDN): ``x * sigmoid(mask(x))``; ``(B, C, H, W) -> (B, C, H, W)``.

    The mask sees a wide context cheaply: 1x1 reduction, strided 3x3, 7x7/3 max-pool, 3x3, bilinear
    upsampling back, plus a 1x1 skip at full resolution.
    """

    def __init__(self, channels: int, reduced: int = 16) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.skip = nn.Conv2d(reduced, reduced, 1)
        self.down = nn.Conv2d(reduced, reduced, 3, stride=2, padding=1)
        self.context = nn.Conv2d(reduced, reduced, 3, padding=1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        down = self.down(reduced)
        pool = min(7, *down.shape[-2:])  # small tiles: pool what there is
        context = self.context(F.max_pool2d(down, pool, stride=min(3, pool)))
        context = F.interpolate(context, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.expand(context + self.skip(reduced)))


class LocalFeatureBlock(nn.Module):
    """RLFB-style block with scale FiLM: ``x + P(ESA(FiLM(x + convs(x))))``, ``P`` zero at init.

    ``(B, C, H, W), (B, cond_dim) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, cond_dim: int, convs: int = 3, esa_channels: int = 16) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(convs))
        self.film = nn.Linear(cond_dim, 2 * channels)
        self.esa = ESA(channels, esa_channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.convs) - 1:
                h = F.leaky_relu(h, 0.05)
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = (h + x) * (1 + gamma) + beta
        return x + self.proj(self.esa(h))


class NeuralOperatorSRv2(NeuralOperatorSR):
    """HNDSR v2 operator: ``(B, 3, h, w) in [0, 1], s -> (B, 3, s*h, s*w)``, bicubic + residual.

    ``spectral=False`` drops the Fourier layers from the trunk (the ablation the model card reports).
    """

    def __init__(
        self,
        channels: int = 48,
        blocks: int = 6,
        modes: int = 12,
        cond_dim: int = 32,
        local_blocks: int = 2,
        local_convs: int = 3,
        esa_channels: int = 16,
        spectral: bool = True,
    ) -> None:
        super().__init__(channels, blocks, modes, cond_dim)
        self.spectral = spectral
        self.refine = nn.ModuleList(
            LocalFeatureBlock(channels, cond_dim, local_convs, esa_channels) for _ in range(local_blocks)
        )

    def forward_features(self, lr: torch.Tensor, scale: int) -> torch.Tensor:
        cond = self.cond(scale_embedding(scale, lr.shape[0], lr.device))
        x = self.head(lr * 2 - 1)
        skip = x
        for block in self.body:
            x = block(x, cond) if self.spectral else _local_only(block, x, cond)
        features = self.tail(x) + skip
        for block in self.refine:
            features = block(features, cond)
        return features

    def trunk_parameters(self) -> list[nn.Parameter]:
        """The v1 trunk's parameters (head, scale conditioning, operator blocks, tail), not the decoder."""
        return [p for part in (self.head, self.cond, self.body, self.tail) for p in part.parameters()]

    def load_v1(self, state: dict[str, torch.Tensor]) -> None:
        """Load a v1 operator's state dict into the trunk and decoder; the refinement blocks stay identity."""
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("refine.")]
        if missing or result.unexpected_keys:
            raise ValueError(f"not a v1 operator state: missing {missing}, unexpected {result.unexpected_keys}")


def _local_only(block: nn.Module, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    gamma, beta = block.film(cond)[:, :, None, None].chunk(2, dim=1)
    return x + block.mix(F.gelu(block.local(x) * (1 + gamma) + beta))
