"""The HNDSR model: shapes for every scale, determinism, tiling, weights integrity, cancellation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hndsr_model.diffusion import (
    RESIDUAL_CHANNELS,
    ResidualDenoiser,
    decode_residual,
    encode_condition,
    encode_residual,
)
from hndsr_model.operator import NeuralOperatorSR
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline, InferenceCancelled, ramp, tile_starts
from hndsr_model.quality import y_psnr
from hndsr_model.sampler import DDIMSampler, add_noise, alpha_sigma
from hndsr_model.weights import DEFAULT_WEIGHTS, WeightsError, load_weights, manifest_path
from tests.helpers import rgb_image


@pytest.fixture(scope="module")
def pipeline() -> HNDSRPipeline:
    return HNDSRPipeline.from_pretrained(device="cpu")


@pytest.mark.parametrize("scale", range(2, 9))
def test_operator_shapes_every_scale(scale: int) -> None:
    net = NeuralOperatorSR(channels=8, blocks=1, modes=4).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 13, 17), scale)
    assert out.shape == (2, 3, 13 * scale, 17 * scale)


def test_untrained_operator_is_bicubic() -> None:
    net = NeuralOperatorSR(channels=8, blocks=1, modes=4).eval()
    lr = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        out = net(lr, 3)
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=3, mode="bicubic", align_corners=False)
    assert torch.allclose(out, bicubic)


def test_denoiser_shape() -> None:
    net = ResidualDenoiser(channels=8, blocks=1)
    x = torch.randn(2, RESIDUAL_CHANNELS, 6, 5)
    assert net(x, torch.rand_like(x), torch.rand(2), 4).shape == x.shape


@pytest.mark.parametrize(("height", "width"), [(64, 48), (50, 37)])
def test_residual_encoding_round_trips_on_any_tile(height: int, width: int) -> None:
    """Training encodes HR - SR with it and sampling decodes with its inverse; odd tiles are edge-padded."""
    residual, sr = torch.randn(1, 3, height, width) * 0.05, torch.rand(1, 3, height, width)
    x0 = encode_residual(residual, 0.05)
    assert x0.shape == encode_condition(sr).shape == (1, RESIDUAL_CHANNELS, -(-height // 4), -(-width // 4))
    assert torch.allclose(decode_residual(x0, 0.05, height, width), residual, atol=1e-7)


@pytest.mark.parametrize("scale", range(2, 9))
def test_pipeline_shapes_every_scale(pipeline: HNDSRPipeline, scale: int) -> None:
    result = pipeline.upscale(rgb_image(11, 14), UpscaleOptions(scale))
    assert result.image.shape == (11 * scale, 14 * scale, 3)
    assert result.image.dtype == np.uint8


def test_sampler_step_recovers_x0_from_exact_v() -> None:
    x0, noise = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    t = torch.tensor([0.6])
    x_t, v = add_noise(x0, noise, t)
    x_next = DDIMSampler(5).step(v, 0.6, 0.0, x_t)
    assert torch.allclose(x_next, x0, atol=1e-5)
    alpha, sigma = alpha_sigma(t)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(1))


def test_sampler_timesteps() -> None:
    times = DDIMSampler(4).timesteps()
    assert len(times) == 5 and times[-1] == 0.0 and times == sorted(times, reverse=True)


def test_same_seed_same_bytes(pipeline: HNDSRPipeline) -> None:
    image = rgb_image(20, 24)
    a = pipeline.upscale(image, UpscaleOptions(4, ddim_steps=3, seed=7))
    b = pipeline.upscale(image, UpscaleOptions(4, ddim_steps=3, seed=7))
    c = pipeline.upscale(image, UpscaleOptions(4, ddim_steps=3, seed=8))
    assert a.image.tobytes() == b.image.tobytes()
    assert a.image.tobytes() != c.image.tobytes()
    assert a.seed == 7


def test_random_seed_is_reported_and_reproducible(pipeline: HNDSRPipeline) -> None:
    image = rgb_image(16, 16)
    first = pipeline.upscale(image, UpscaleOptions(2, ddim_steps=2))
    assert first.seed is not None
    again = pipeline.upscale(image, UpscaleOptions(2, ddim_steps=2, seed=first.seed))
    assert np.array_equal(first.image, again.image)


def test_deterministic_path_ignores_seed(pipeline: HNDSRPipeline) -> None:
    image = rgb_image(16, 16)
    assert np.array_equal(pipeline.upscale(image, UpscaleOptions(3, seed=1)).image,
                          pipeline.upscale(image, UpscaleOptions(3, seed=2)).image)


def test_tiles_cover_and_overlap() -> None:
    assert tile_starts(100, 256, 16) == [0]
    starts = tile_starts(300, 128, 16)
    assert starts[0] == 0 and starts[-1] == 300 - 128
    assert all(b - a <= 128 - 16 for a, b in zip(starts[:-1], starts[1:], strict=True))
    w = ramp(10, 4, 4)
    assert w[4:6].eq(1).all() and w[0] < w[1] < w[2] < w[3] < 1


def test_tiled_matches_untiled(pipeline: HNDSRPipeline) -> None:
    image = rgb_image(96, 112, seed=3)
    whole = pipeline.upscale(image, UpscaleOptions(2)).image
    tiled_pipe = HNDSRPipeline(pipeline.model, pipeline.device, tile_size=48, tile_overlap=12)
    tiled = tiled_pipe.upscale(image, UpscaleOptions(2))
    assert tiled.tiles > 1
    assert y_psnr(tiled.image, whole, 0) > 38.0


def test_cancellation_between_tiles(pipeline: HNDSRPipeline) -> None:
    tiled_pipe = HNDSRPipeline(pipeline.model, pipeline.device, tile_size=32, tile_overlap=4, tile_batch=1)
    calls = []

    def cancel_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(InferenceCancelled, match="tile 3"):
        tiled_pipe.upscale(rgb_image(64, 64), UpscaleOptions(2), should_cancel=cancel_after_two)


def test_cancellation_between_diffusion_steps(pipeline: HNDSRPipeline) -> None:
    checks = []

    def cancel_during_sampling() -> bool:
        checks.append(1)
        return len(checks) > 3  # 1st check: before the tile; then one per diffusion step

    with pytest.raises(InferenceCancelled, match="diffusion step 3/10"):
        pipeline.upscale(rgb_image(16, 16),
                         UpscaleOptions(2, ddim_steps=10, seed=0), should_cancel=cancel_during_sampling)


def test_rejects_bad_arguments(pipeline: HNDSRPipeline) -> None:
    with pytest.raises(ValueError):
        pipeline.upscale(rgb_image(8, 8), UpscaleOptions(9))
    with pytest.raises(ValueError):
        pipeline.upscale(np.zeros((8, 8), np.uint8), UpscaleOptions(2))


def copy_weights(tmp_path: Path) -> Path:
    target = tmp_path / "hndsr.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, target)
    shutil.copy(manifest_path(DEFAULT_WEIGHTS), manifest_path(target))
    return target


def test_checksum_failure(tmp_path: Path) -> None:
    target = copy_weights(tmp_path)
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_weights(target)


def test_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "absent.safetensors")


def test_committed_weights_are_small_and_verified() -> None:
    assert DEFAULT_WEIGHTS.stat().st_size < 20 * 2**20
    model = load_weights()
    assert len(model.sha256) == 64 and model.version
    # The default is v2; v1 stays beside it, loadable, for comparisons and as v2's starting point.
    assert model.config.arch == "v2" and model.manifest["quality"]["y_psnr_db"]["x4"]["hndsr"] > 28.08
    v1 = load_weights(DEFAULT_WEIGHTS.with_name("hndsr-1.0.0.safetensors"))
    assert v1.config.arch == "v1" and v1.version == "1.0.0"


@pytest.mark.parametrize("height", [80, 108])  # 108: the last stride (4) is shorter than the overlap (8)
def test_a_resumed_stream_yields_the_rest_of_the_uninterrupted_one(height: int) -> None:
    pipeline = HNDSRPipeline.from_pretrained(device="cpu", tile_size=32, tile_overlap=8)
    image = torch.rand(3, height, 40, generator=torch.Generator().manual_seed(height))
    options = UpscaleOptions(2, ddim_steps=1, seed=5)
    full = list(pipeline.upscale_rows(lambda y0, y1: image[:, y0:y1], height, 40, options))
    assert len(full) == pipeline.count_tile_rows(height)
    for start in range(len(full) + 1):
        rest = list(pipeline.upscale_rows(lambda y0, y1: image[:, y0:y1], height, 40, options, start_row=start))
        assert [y for y, _ in rest] == [y for y, _ in full[start:]]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(rest, full[start:], strict=True)), start
