"""Tiled, cancellable inference: the one ``upscale`` the service and the CLI share.

An image is cut into overlapping LR tiles; the tiles of one tile row go through the neural operator and,
when ``ddim_steps > 0``, the residual diffusion sampler in batches of up to ``tile_batch``; HR tiles are
blended with linear ramps over the overlap, so memory depends on the tile size, not the image size
(besides the output itself). The image stays on the model's device from the upload of its pixels to the
uint8 quantisation: one copy to the host per band of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batching import CancelCheck, InferenceCancelled, MicroBatcher, TileWork
from .consistency import correction
from .diffusion import UNSHUFFLE, decode_residual, encode_condition
from .engines import make_engine
from .options import DEFAULT_TILE_SIZE, UpscaleOptions
from .sampler import DDIMSampler
from .uncertainty import combine, luma
from .weights import DEFAULT_WEIGHTS, LoadedModel, load_weights

Progress = Callable[[int, int], None]
RowReader = Callable[[int, int], torch.Tensor]

# Per device type (the service's TILE_BATCH and BATCH_WAIT_MS override them): tiles per network call, and
# how long the micro-batcher holds a request for company (0: no micro-batcher). On a GPU one tile leaves
# most of the chip idle (issue 9: 2.8 ms for one tile, 627 tiles/s in batches of 8); on the CPU neither
# pays (docs/throughput.md).
DEFAULT_TILE_BATCH = {"cpu": 4, "cuda": 16}
DEFAULT_BATCH_WAIT_MS = {"cpu": 0.0, "cuda": 2.0}
# Seed offset between a tile's diffusion samples (2**64 / golden ratio: far from every other tile's seed).
SAMPLE_SEED_STRIDE = 0x9E3779B97F4A7C15


class UncertaintyUnavailable(ValueError):
    """An uncertainty map was asked of weights that carry no uncertainty head."""


@dataclass(frozen=True)
class UpscaleResult:
    image: np.ndarray  # (s*H, s*W, 3) uint8
    tiles: int
    seed: int | None
    uncertainty: np.ndarray | None = None  # (s*H, s*W) float32: sigma of the output's luma, in [0, 1] units


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda was asked for but no CUDA device is available")
    return torch.device(device)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Float intensities in [0, 1] (any range; clamped) -> uint8, rounded half to even."""
    return image.clamp(0, 1).mul_(255).round_().to(torch.uint8)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` overlapping by >= ``overlap``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _first_overlapping(starts: list[int], tile: int, row: int) -> int:
    """The first tile row whose tiles reach into tile row ``row`` (``row`` itself when none does)."""
    if row >= len(starts):
        return len(starts)
    return next(k for k in range(row + 1) if starts[k] + tile > starts[row])


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
    """Loaded HNDSR model plus tiling; thread-safe for concurrent ``upscale`` calls.

    ``tile_batch`` bounds the tiles of one network call. With ``batch_wait_ms > 0`` a :class:`MicroBatcher`
    makes every network call, so concurrent requests' tiles share batches; a request waits at most that
    long for company. ``None``: the device's default (:data:`DEFAULT_TILE_BATCH`, :data:`DEFAULT_BATCH_WAIT_MS`).
    ``engine`` runs the neural operator (:mod:`.engines`: ``auto``, ``torch``, ``onnxruntime``).
    """

    def __init__(self, model: LoadedModel, device: torch.device, tile_size: int = DEFAULT_TILE_SIZE,
                 tile_overlap: int = 16, tile_batch: int | None = None, batch_wait_ms: float | None = None,
                 engine: str = "auto"):
        if not 0 <= tile_overlap < tile_size // 2:
            raise ValueError("tile_overlap must be in [0, tile_size / 2)")
        self.model = model
        self.device = device
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.tile_batch = tile_batch or DEFAULT_TILE_BATCH.get(device.type, 1)
        self.engine = make_engine(engine, model, device, tile_size)
        wait_ms = DEFAULT_BATCH_WAIT_MS.get(device.type, 0.0) if batch_wait_ms is None else batch_wait_ms
        self.batcher = MicroBatcher(self._run_batch, self.tile_batch, wait_ms / 1000) if wait_ms > 0 else None

    @classmethod
    def from_pretrained(
        cls, weights: Path = DEFAULT_WEIGHTS, device: str = "auto", **options: Any
    ) -> HNDSRPipeline:
        torch_device = resolve_device(device)
        return cls(load_weights(weights, torch_device), torch_device, **options)

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def has_uncertainty(self) -> bool:
        return self.model.uncertainty is not None

    def count_tiles(self, height: int, width: int) -> int:
        return self.count_tile_rows(height) * len(tile_starts(width, self.tile_size, self.tile_overlap))

    def count_tile_rows(self, height: int) -> int:
        """The bands :meth:`upscale_rows` yields for an image of ``height`` rows."""
        return len(tile_starts(height, self.tile_size, self.tile_overlap))

    def upscale(
        self,
        image: np.ndarray,
        options: UpscaleOptions,
        should_cancel: CancelCheck | None = None,
        progress: Progress | None = None,
    ) -> UpscaleResult:
        """Super-resolve an ``(H, W, 3) uint8`` RGB image by ``options.scale`` (``options.bands`` and ``model`` are
        the caller's: a raster's bands, and which pipeline it asks).

        ``options.uncertainty`` adds the map of :mod:`.uncertainty` (with ``ddim_steps > 0`` from the head and
        ``uncertainty_samples`` seeded samples, the first of which is the output); the output is the same
        bytes either way. ``options.consistency`` projects each tile onto its input's block means
        (:mod:`.consistency`) before the tiles are blended. Diffusion without a seed gets one
        (:meth:`UpscaleOptions.seeded`), reported in the result."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("image must be an (H, W, 3) uint8 array")
        height, width = image.shape[:2]
        options = options.seeded()
        scale = options.scale
        # uint8 crosses to the device (a quarter of the float bytes), which makes the floats there.
        lr = torch.from_numpy(np.array(image)).to(self.device).permute(2, 0, 1).float().div_(255)
        out = np.empty((height * scale, width * scale, 3), np.uint8)
        sigma = np.empty((height * scale, width * scale), np.float32) if options.uncertainty else None
        bands = self._stream(lambda y0, y1: lr[:, y0:y1], height, width, options, should_cancel, progress,
                             finish=lambda band: band)
        for y, band in bands:
            rows = slice(y, y + band.shape[1])
            out[rows] = to_uint8(band[:3]).permute(1, 2, 0).cpu().numpy()  # the band's one copy to the host
            if sigma is not None:
                sigma[rows] = band[3].cpu().numpy()
        return UpscaleResult(out, self.count_tiles(height, width), options.seed, sigma)

    def upscale_rows(
        self,
        read_rows: RowReader,
        height: int,
        width: int,
        options: UpscaleOptions,
        should_cancel: CancelCheck | None = None,
        progress: Progress | None = None,
        start_row: int = 0,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Stream the super-resolution of an ``height x width`` image, one band of rows at a time.

        ``read_rows(y0, y1)`` returns LR rows ``[y0, y1)`` as a ``(3, y1 - y0, width)`` float tensor
        (intensities in about [0, 1]); it is called once per tile row, so a caller can read a scene
        from disk by windows. Yields ``(hr_row, band)``: ``band`` is ``(3, rows, width * scale)``
        float on the host, unclamped, and starts at output row ``hr_row``; bands cover the output top
        to bottom. Only one tile-row band is held, so memory does not grow with the height.
        ``options.uncertainty`` adds the uncertainty map as a 4th channel (see :meth:`upscale`). With diffusion
        the options carry their seed (:meth:`UpscaleOptions.seeded`): a stream is made again, or resumed, with it.

        ``start_row`` resumes a stream that stopped after yielding that many bands: it yields the rest, the
        same values as an uninterrupted stream. The tile rows before it whose tiles overlap its band are computed
        again, unyielded (one row, or two where the last row's stride is shorter than the overlap).
        """
        if options.ddim_steps and options.seed is None:
            raise ValueError("diffusion streams need a seed: pass options.seeded()")
        return self._stream(read_rows, height, width, options, should_cancel, progress,
                            finish=lambda band: band.cpu(), start_row=start_row)

    @torch.inference_mode()
    def _stream(
        self,
        read_rows: RowReader,
        height: int,
        width: int,
        options: UpscaleOptions,
        should_cancel: CancelCheck | None,
        progress: Progress | None,
        finish: Callable[[torch.Tensor], torch.Tensor],
        start_row: int = 0,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """:meth:`upscale_rows` on the device; ``finish`` turns each finished float band into what is yielded."""
        scale, ddim_steps, seed, uncertainty = options.scale, options.ddim_steps, options.seed, options.uncertainty
        if uncertainty and not self.has_uncertainty:
            raise UncertaintyUnavailable(f"the weights of model {self.version} carry no uncertainty head")
        samples = options.uncertainty_samples if uncertainty and ddim_steps else 1
        # The map's extra samples do not shrink the batches: the output is then computed in the same batches
        # with and without the map (see _add_residuals).
        per_call = self.tile_batch
        channels = 4 if uncertainty else 3
        cancelled = should_cancel or (lambda: False)
        th, tw = min(self.tile_size, height), min(self.tile_size, width)
        rows = tile_starts(height, self.tile_size, self.tile_overlap)
        cols = tile_starts(width, self.tile_size, self.tile_overlap)
        total = len(rows) * len(cols)
        weight = self._blend_weights(th, tw, height, width, scale)
        # channel sums (RGB, and sigma with the map) + weight of the rows the next band continues
        carry = torch.zeros(channels + 1, 0, width * scale, device=self.device)
        if not 0 <= start_row <= len(rows):
            raise ValueError(f"start_row must be in 0..{len(rows)}, got {start_row}")
        first = _first_overlapping(rows, th, start_row)
        index = first * len(cols)  # tile indices seed the noise: the same whatever row the stream starts at
        for r, y in enumerate(rows[first:], start=first):
            lr = read_rows(y, y + th).to(self.device)
            band = torch.zeros(channels + 1, th * scale, width * scale, device=self.device)
            band[:, : carry.shape[1]] = carry
            for start in range(0, len(cols), per_call):
                xs = cols[start : start + per_call]
                if cancelled():
                    raise InferenceCancelled(f"cancelled before tile {index + 1}/{total}")
                tiles = torch.stack([lr[:, :, x : x + tw] for x in xs])
                noise = (self._start_noise(len(xs), th * scale, tw * scale, seed, index, samples)
                         if ddim_steps else None)
                sr = self._super_resolve(TileWork(tiles, scale, ddim_steps, noise, cancelled, index, total,
                                                  uncertainty, samples))
                if options.consistency:  # per tile, before blending: ramps then mix outputs that each satisfy it
                    sr[:, :3] += correction(sr[:, :3], tiles, scale)
                for x, tile in zip(xs, sr, strict=True):
                    w = weight(y, x)
                    band[:channels, :, x * scale : (x + tw) * scale].addcmul_(tile, w)
                    band[channels:, :, x * scale : (x + tw) * scale] += w
                index += len(xs)
                if progress and r >= start_row:
                    progress(index, total)
            done = ((rows[r + 1] if r + 1 < len(rows) else y + th) - y) * scale
            carry = band[:, done:].clone()  # a copy, so the band is freed once the caller lets go of its rows
            if r < start_row:
                continue
            finished = finish(band[:channels, :done].div_(band[channels:, :done]))
            del band
            yield y * scale, finished

    def _blend_weights(self, th: int, tw: int, height: int, width: int, scale: int
                       ) -> Callable[[int, int], torch.Tensor]:
        """``weight(y, x)``: the ``(1, th*s, tw*s)`` blending weight of the tile at LR ``(y, x)``, on the device.
        A tile fades in and out only where it has a neighbour, so there are at most nine weights."""
        fade = self.tile_overlap * scale
        cache: dict[tuple[bool, ...], torch.Tensor] = {}

        def weight(y: int, x: int) -> torch.Tensor:
            edges = (y > 0, y + th < height, x > 0, x + tw < width)
            if edges not in cache:
                wy = ramp(th * scale, fade if edges[0] else 0, fade if edges[1] else 0)
                wx = ramp(tw * scale, fade if edges[2] else 0, fade if edges[3] else 0)
                cache[edges] = (wy[:, None] * wx[None, :])[None].to(self.device)
            return cache[edges]

        return weight

    def _start_noise(self, n: int, height: int, width: int, seed: int | None, first_tile: int, samples: int = 1
                     ) -> torch.Tensor:
        """The sampler's starting noise for ``n`` HR tiles of ``height x width`` and ``samples`` samples of each,
        ``(n * samples, 48, h/4, w/4)``, tile-major.

        One generator per tile and sample, seeded from (seed, tile index, sample) by plain arithmetic (not
        hash(), which Python may change), keeps the bytes reproducible and independent of the order tiles
        run in and of the batch they run in. Sample 0 is the output, the same with or without more samples.
        """
        shape = (3 * UNSHUFFLE**2, -(-height // UNSHUFFLE), -(-width // UNSHUFFLE))
        noise = [torch.randn(shape, generator=torch.Generator().manual_seed(
                     ((seed or 0) * 1_000_003 + i + k * SAMPLE_SEED_STRIDE) % 2**63))
                 for i in range(first_tile, first_tile + n) for k in range(samples)]
        return (torch.stack(noise) * self.model.config.noise_temperature).to(self.device)

    def _super_resolve(self, work: TileWork) -> torch.Tensor:
        """Run ``work`` (through the micro-batcher when there is one); raises InferenceCancelled."""
        if self.batcher is not None:
            return self.batcher.submit(work)
        self._run_batch([work])
        return work.result.result()

    @torch.inference_mode()
    def _run_batch(self, works: list[TileWork]) -> None:
        """Super-resolve the tiles of ``works`` (all of one key) as one batch, each work's result set in its
        future. A work whose request is cancelled during sampling leaves the batch at the next step."""
        scale, steps, samples = works[0].scale, works[0].steps, works[0].samples
        lr = torch.cat([w.lr for w in works])
        sr, features = self.engine(lr, scale)
        sigma = self._head_sigma(features, sr, scale) if works[0].uncertainty else None
        if steps:
            works, sr, sigma = self._add_residuals(works, sr, sigma, scale, steps, samples)
        out = sr if sigma is None else torch.cat([sr, sigma], dim=1)
        for work, tiles in zip(works, out.split([len(w) for w in works]), strict=True):
            work.result.set_result(tiles)

    def _head_sigma(self, features: torch.Tensor, sr: torch.Tensor, scale: int) -> torch.Tensor:
        """The uncertainty head's calibrated sigma of the operator output's luma, ``(B, 1, H, W)``."""
        head = self.model.uncertainty
        assert head is not None  # _stream refuses the map without a head
        return head(features, sr.clamp(0, 1), scale).exp_().mul_(self.model.config.calibration(scale))

    def _add_residuals(self, works: list[TileWork], sr: torch.Tensor, sigma: torch.Tensor | None, scale: int,
                       steps: int, samples: int) -> tuple[list[TileWork], torch.Tensor, torch.Tensor | None]:
        """DDIM-sample the texture residual of every tile ``(B, 3, H, W)`` ``samples`` times and add the first;
        returns the works that were not cancelled meanwhile, their tiles and, with ``sigma``, their map (the
        head's sigma and the samples' spread of luma, combined).

        Each sample is a pass of its own over the batch's tiles, so that the output (sample 0) runs in the very
        batch it runs in without the map: a convolution's rounding depends on its batch size (oneDNN and cuDNN
        choose kernels by it), and one batch of all samples moved an output pixel by a grey level on some CPUs."""
        condition = encode_condition(sr)
        drawn: list[torch.Tensor] = []
        for k in range(samples):
            noise = torch.cat([w.noise[k::samples] for w in works if w.noise is not None])
            works, x0, kept = self._sample(works, noise, condition, scale, steps)
            condition, sr, drawn = condition[kept], sr[kept], [sample[kept] for sample in drawn]
            sigma = None if sigma is None else sigma[kept]
            drawn.append(sr + decode_residual(x0, self.model.config.residual_scale, *sr.shape[-2:]))
            if not works:
                break
        if sigma is not None:
            sigma = combine(sigma, torch.cat([luma(sample.clamp(0, 1)) for sample in drawn], dim=1))
        return works, drawn[0], sigma

    def _sample(self, works: list[TileWork], x: torch.Tensor, condition: torch.Tensor, scale: int, steps: int
                ) -> tuple[list[TileWork], torch.Tensor, torch.Tensor]:
        """One DDIM pass from the noise ``x`` (a row per tile of ``works``) given the encoded ``condition``.
        A work whose request is cancelled leaves at the next step; returns the works still running, their
        ``x0`` and which of the given rows they hold (a bool mask)."""
        kept = torch.ones(x.shape[0], dtype=torch.bool, device=self.device)
        sampler = DDIMSampler(steps)
        times = sampler.timesteps()
        for step, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
            stopped = [w for w in works if w.cancelled()]
            if stopped:
                rows = self._cancel(works, stopped, f"cancelled at diffusion step {step + 1}/{steps}")
                works = [w for w in works if w not in stopped]
                kept[kept.clone()] = rows
                x, condition = x[rows], condition[rows]
                if not works:
                    break
            v = self.model.denoiser(x, condition, torch.full((x.shape[0],), t, device=self.device), scale)
            x = sampler.step(v, t, t_next, x)
        return works, x, kept

    def _cancel(self, works: list[TileWork], stopped: list[TileWork], reason: str) -> torch.Tensor:
        """Fail the ``stopped`` works with InferenceCancelled; a bool mask of the other works' rows (one per tile)."""
        for work in stopped:
            work.result.set_exception(InferenceCancelled(reason))
        keep = torch.tensor([w not in stopped for w in works], device=self.device)
        return keep.repeat_interleave(torch.tensor([len(w) for w in works], device=self.device))
