"""Tiled, cancellable inference: the one ``upscale`` the service and the CLI share.

An image is cut into overlapping LR tiles; each tile goes through the neural operator and, when
``ddim_steps > 0``, the residual diffusion sampler; HR tiles are blended with linear ramps over the
overlap, so memory depends on the tile size, not the image size (besides the output itself).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .diffusion import decode_residual, encode_condition
from .sampler import DDIMSampler
from .weights import DEFAULT_WEIGHTS, LoadedModel, load_weights

CancelCheck = Callable[[], bool]
Progress = Callable[[int, int], None]
RowReader = Callable[[int, int], torch.Tensor]


class InferenceCancelled(Exception):
    """Raised between tiles or diffusion steps once ``should_cancel()`` returns True."""


@dataclass(frozen=True)
class UpscaleResult:
    image: np.ndarray  # (s*H, s*W, 3) uint8
    tiles: int
    seed: int | None


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda was asked for but no CUDA device is available")
    return torch.device(device)


def random_seed() -> int:
    return random.SystemRandom().randrange(2**31)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Float intensities in [0, 1] (any range; clamped) -> uint8, rounded half to even."""
    return image.clamp(0, 1).mul_(255).round_().to(torch.uint8)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` overlapping by >= ``overlap``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def ramp(length: int, fade_start: int, fade_end: int) -> torch.Tensor:
    """1-D blending weight: linear fade-in over ``fade_start`` pixels and fade-out over ``fade_end``."""
    w = torch.ones(length)
    if fade_start:
        w[:fade_start] = (torch.arange(fade_start) + 0.5) / fade_start
    if fade_end:
        w[length - fade_end :] = torch.minimum(
            w[length - fade_end :], ((torch.arange(fade_end) + 0.5) / fade_end).flip(0)
        )
    return w


class HNDSRPipeline:
    """Loaded HNDSR model plus tiling; thread-safe for concurrent ``upscale`` calls."""

    def __init__(self, model: LoadedModel, device: torch.device, tile_size: int = 256, tile_overlap: int = 16):
        if not 0 <= tile_overlap < tile_size // 2:
            raise ValueError("tile_overlap must be in [0, tile_size / 2)")
        self.model = model
        self.device = device
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap

    @classmethod
    def from_pretrained(
        cls, weights: Path = DEFAULT_WEIGHTS, device: str = "auto", **tiling: int
    ) -> HNDSRPipeline:
        torch_device = resolve_device(device)
        return cls(load_weights(weights, torch_device), torch_device, **tiling)

    @property
    def version(self) -> str:
        return self.model.version

    def count_tiles(self, height: int, width: int) -> int:
        rows = tile_starts(height, self.tile_size, self.tile_overlap)
        cols = tile_starts(width, self.tile_size, self.tile_overlap)
        return len(rows) * len(cols)

    def upscale(
        self,
        image: np.ndarray,
        scale: int,
        ddim_steps: int = 0,
        seed: int | None = None,
        should_cancel: CancelCheck | None = None,
        progress: Progress | None = None,
    ) -> UpscaleResult:
        """Super-resolve an ``(H, W, 3) uint8`` RGB image by the integer ``scale`` (2-8)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("image must be an (H, W, 3) uint8 array")
        height, width = image.shape[:2]
        if ddim_steps and seed is None:
            seed = random_seed()
        lr = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)
        out = np.empty((height * scale, width * scale, 3), np.uint8)
        rows = self.upscale_rows(lambda y0, y1: lr[:, y0:y1], height, width, scale, ddim_steps, seed,
                                 should_cancel, progress)
        for y, band in rows:
            out[y : y + band.shape[1]] = to_uint8(band).permute(1, 2, 0).numpy()
        return UpscaleResult(out, self.count_tiles(height, width), seed)

    @torch.inference_mode()
    def upscale_rows(
        self,
        read_rows: RowReader,
        height: int,
        width: int,
        scale: int,
        ddim_steps: int = 0,
        seed: int | None = None,
        should_cancel: CancelCheck | None = None,
        progress: Progress | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Stream the super-resolution of an ``height x width`` image, one band of rows at a time.

        ``read_rows(y0, y1)`` returns LR rows ``[y0, y1)`` as a ``(3, y1 - y0, width)`` float tensor
        (intensities in about [0, 1]); it is called once per tile row, so a caller can read a scene
        from disk by windows. Yields ``(hr_row, band)``: ``band`` is ``(3, rows, width * scale)``
        float, unclamped, and starts at output row ``hr_row``; bands cover the output top to bottom.
        Only one tile-row band is held, so memory does not grow with the height.
        """
        if not 2 <= scale <= 8:
            raise ValueError(f"scale must be an integer in 2..8, got {scale}")
        cancelled = should_cancel or (lambda: False)
        th, tw = min(self.tile_size, height), min(self.tile_size, width)
        rows = tile_starts(height, self.tile_size, self.tile_overlap)
        cols = tile_starts(width, self.tile_size, self.tile_overlap)
        total = len(rows) * len(cols)
        carry = torch.zeros(4, 0, width * scale)  # RGB sums + weight of rows the next band continues
        index = 0
        for r, y in enumerate(rows):
            lr = read_rows(y, y + th)
            band = torch.zeros(4, th * scale, width * scale)
            band[:, : carry.shape[1]] = carry
            for x in cols:
                if cancelled():
                    raise InferenceCancelled(f"cancelled before tile {index + 1}/{total}")
                tile = lr[:, :, x : x + tw][None].to(self.device)
                sr = self._run_tile(tile, scale, ddim_steps, seed, index, cancelled)[0].float().cpu()
                w = self._blend_weight(y, x, th, tw, height, width, scale)
                band[:, :, x * scale : (x + tw) * scale] += torch.cat([sr * w, w])
                index += 1
                if progress:
                    progress(index, total)
            done = ((rows[r + 1] if r + 1 < len(rows) else y + th) - y) * scale
            carry = band[:, done:].clone()  # a copy, so the band is freed once the caller lets go of its rows
            finished = band[:3, :done].div_(band[3:, :done])
            del band
            yield y * scale, finished

    def _blend_weight(self, y: int, x: int, th: int, tw: int, height: int, width: int, scale: int) -> torch.Tensor:
        fade = self.tile_overlap * scale
        wy = ramp(th * scale, fade if y > 0 else 0, fade if y + th < height else 0)
        wx = ramp(tw * scale, fade if x > 0 else 0, fade if x + tw < width else 0)
        return (wy[:, None] * wx[None, :])[None]

    def _run_tile(
        self, tile: torch.Tensor, scale: int, steps: int, seed: int | None, index: int, cancelled: CancelCheck
    ) -> torch.Tensor:
        sr = self.model.operator(tile, scale)
        if steps == 0:
            return sr
        return sr + self._sample_residual(sr, scale, steps, seed, index, cancelled)

    def _sample_residual(
        self, sr: torch.Tensor, scale: int, steps: int, seed: int | None, index: int, cancelled: CancelCheck
    ) -> torch.Tensor:
        """DDIM-sample the texture residual for one operator-output tile ``(1, 3, H, W) -> (1, 3, H, W)``."""
        cond = encode_condition(sr)
        # One generator per tile, seeded from (seed, tile index) by plain arithmetic (not hash(), which
        # Python may change), keeps the bytes reproducible and independent of the order tiles run in.
        generator = torch.Generator().manual_seed(((seed or 0) * 1_000_003 + index) % 2**63)
        x = (torch.randn(cond.shape, generator=generator) * self.model.config.noise_temperature).to(self.device)
        sampler = DDIMSampler(steps)
        times = sampler.timesteps()
        for step, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
            if cancelled():
                raise InferenceCancelled(f"cancelled at diffusion step {step + 1}/{steps}")
            v = self.model.denoiser(x, cond, torch.full((1,), t, device=self.device), scale)
            x = sampler.step(v, t, t_next, x)
        return decode_residual(x, self.model.config.residual_scale, *sr.shape[-2:])
