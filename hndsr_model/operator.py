"""Neural-operator super-resolver: the deterministic stage of HNDSR.

Global spectral mixing (factorised Fourier layers, FNO-style) and local convolutions run at LR
resolution; an arbitrary-scale decoder turns LR features into the HR residual over bicubic
upsampling, with per-pixel kernels generated from (sub-pixel offset, 1/scale). One network serves
every integer scale.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


class SpectralMixing(nn.Module):
    """Channel-wise Fourier layer on the lowest ``modes`` frequencies (factorised FNO).

    ``(B, C, H, W) -> (B, C, H, W)``. Each channel gets its own complex filter on the retained
    modes; channel mixing is left to the 1x1 convolutions around it, which keeps the parameter
    count independent of ``modes * channels**2``.
    """

    def __init__(self, channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / channels
        self.weight = nn.Parameter(scale * torch.randn(channels, 2 * modes, modes, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        rows = min(self.modes, height // 2)
        cols = min(self.modes, width // 2 + 1)
        # Only 2*rows x cols modes survive, so two small DFT matrix products replace rfft2/irfft2:
        # the same numbers as the FFT (checked in tests), several times faster on the CPU.
        fh, fw, inverse_weights = spectral_bases(height, width, rows, cols, x.device)
        with torch.autocast(x.device.type, enabled=False):  # spectra stay float32 under bf16 autocast
            xf = x.float()
            half = torch.complex(xf @ fw.real.T, xf @ fw.imag.T)  # (B, C, H, c)
            spectrum = fh @ half  # (B, C, 2r, c)
            weight = torch.view_as_complex(self.weight.contiguous())  # channels-last would stride it
            weight = torch.cat([weight[:, :rows, :cols], weight[:, weight.shape[1] - rows :, :cols]], dim=1)
            mixed = spectrum * weight * inverse_weights
            back = fh.conj().T @ mixed  # (B, C, H, c)
            return (back.real @ fw.real + back.imag @ fw.imag).to(x.dtype)


@functools.lru_cache(maxsize=64)
def spectral_bases(height: int, width: int, rows: int, cols: int, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The retained modes' DFT rows for a ``height x width`` input, ``(2 rows, H)`` and ``(cols, W)``, and the
    inverse's weight per column, ``(cols,)``. The same for every call of a shape, so made once per shape: made
    in every block's every call they were 168 of the 455 operators of one v2 forward (``torch.profiler``), each
    a kernel launch on a GPU. Ordinary tensors (not inference tensors) without gradients, so inference and
    training share them. Not tried under ``torch.compile`` (``train --compile``, CUDA only), where Dynamo may
    trace through the cache or break the graph at it."""
    with torch.inference_mode(False), torch.no_grad():
        row_freqs = torch.cat([torch.arange(rows), torch.arange(height - rows, height)]).to(device)
        fh = dft_matrix(row_freqs, height)
        fw = dft_matrix(torch.arange(cols, device=device), width)
        # Inverse of a real FFT: every column but DC (and Nyquist) stands for its conjugate twin too.
        twice = torch.full((cols,), 2.0, device=device)
        twice[0] = 1.0
        if width % 2 == 0 and cols == width // 2 + 1:
            twice[-1] = 1.0
        return fh, fw, twice / (height * width)


def dft_matrix(freqs: torch.Tensor, size: int) -> torch.Tensor:
    """Rows of the forward DFT, ``exp(-2 pi i k n / size)`` for ``k`` in ``freqs``: ``(len(freqs), size)``."""
    n = torch.arange(size, device=freqs.device, dtype=torch.float64)
    angle = (-2 * torch.pi / size) * (freqs.double()[:, None] * n[None, :])
    return torch.polar(torch.ones_like(angle), angle).to(torch.complex64)


class OperatorBlock(nn.Module):
    """``x + W2 · GELU(FiLM(spectral(x) + conv3x3(x)))``; ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, modes: int, cond_dim: int) -> None:
        super().__init__()
        self.spectral = SpectralMixing(channels, modes)
        self.local = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * channels)
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = (self.spectral(x) + self.local(x)) * (1 + gamma) + beta
        return x + self.mix(F.gelu(h))


class ScaleAwareDecoder(nn.Module):
    """Arbitrary-scale decoder: ``(B, C, h, w), s -> (B, 3, s*h, s*w)``.

    Each HR pixel is a linear map of the 3x3 LR feature neighbourhood around it; the map's weights
    come from an MLP of the pixel's offset from its LR cell centre and of 1/s (Meta-SR style), so the
    same parameters decode any integer scale.
    """

    def __init__(self, channels: int, hidden: int = 64, out_channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels
        self.kernel_net = nn.Sequential(
            nn.Linear(3, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, channels * 9 * out_channels),
        )
        # Start as plain bicubic: the residual is zero until training says otherwise.
        nn.init.zeros_(self.kernel_net[-1].weight)
        nn.init.zeros_(self.kernel_net[-1].bias)

    def kernels(self, scale: int, device: torch.device) -> torch.Tensor:
        """Per-sub-pixel kernels, ``(s, s, C*9, out)``."""
        centre = (torch.arange(scale, device=device, dtype=torch.float32) + 0.5) / scale - 0.5
        dy, dx = torch.meshgrid(centre, centre, indexing="ij")
        inv = torch.full_like(dy, 1.0 / scale)
        coords = torch.stack([dy, dx, inv], dim=-1)
        return self.kernel_net(coords).view(scale, scale, self.channels * 9, self.out_channels)

    def forward(self, features: torch.Tensor, scale: int) -> torch.Tensor:
        # A per-sub-pixel linear map of the 3x3 neighbourhood is a 3x3 convolution to s*s*out channels
        # followed by a pixel shuffle; one conv2d is far faster than unfold + einsum.
        kernels = self.kernels(scale, features.device).to(features.dtype)
        weight = kernels.view(scale, scale, self.channels, 3, 3, self.out_channels).permute(5, 0, 1, 2, 3, 4)
        weight = weight.reshape(self.out_channels * scale * scale, self.channels, 3, 3)
        return F.pixel_shuffle(F.conv2d(features, weight, padding=1), scale)


def scale_embedding(scale: int, batch: int, device: torch.device) -> torch.Tensor:
    """Features of the scale factor for FiLM conditioning, ``(B, 3)``."""
    inv = 1.0 / scale
    values = torch.tensor([inv, inv * inv, scale / 8.0], device=device)
    return values.expand(batch, 3)


class NeuralOperatorSR(nn.Module):
    """HNDSR's deterministic stage: ``(B, 3, h, w) in [0, 1], s -> (B, 3, s*h, s*w)``.

    Output = bicubic(x) + decoder(operator_body(x)); the network only learns the residual.
    """

    def __init__(
        self, channels: int = 48, blocks: int = 6, modes: int = 12, cond_dim: int = 32
    ) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.cond = nn.Sequential(nn.Linear(3, cond_dim), nn.GELU(), nn.Linear(cond_dim, cond_dim))
        self.body = nn.ModuleList(OperatorBlock(channels, modes, cond_dim) for _ in range(blocks))
        self.tail = nn.Conv2d(channels, channels, 3, padding=1)
        self.decoder = ScaleAwareDecoder(channels)

    def forward(self, lr: torch.Tensor, scale: int) -> torch.Tensor:
        return self.decode(lr, self.forward_features(lr, scale), scale)

    def collapse(self) -> NeuralOperatorSR:
        """Fold training-time re-parameterisations for inference (v3's); this network has none."""
        return self

    def forward_features(self, lr: torch.Tensor, scale: int) -> torch.Tensor:
        """The LR feature map the decoder reads, ``(B, C, h, w)`` (the uncertainty head reads it too)."""
        cond = self.cond(scale_embedding(scale, lr.shape[0], lr.device))
        x = self.head(lr * 2 - 1)
        skip = x
        for block in self.body:
            x = block(x, cond)
        return self.tail(x) + skip

    def decode(self, lr: torch.Tensor, features: torch.Tensor, scale: int) -> torch.Tensor:
        """``bicubic(lr) + decoder(features)``: the HR output, ``(B, 3, s*h, s*w)``."""
        base = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)
        return base + self.decoder(features, scale)
