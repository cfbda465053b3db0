"""The uncertainty map: its shape at every scale, determinism, independence from the output, calibration,
the weights that carry it, its training stage, and the evaluation's metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hndsr_model import train
from hndsr_model.evaluate import uncertainty_scores
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline, UncertaintyUnavailable
from hndsr_model.quality import average_ranks, gmsd, spearman
from hndsr_model.uncertainty import UncertaintyHead, calibration_factor, combine, gaussian_nll, luma
from hndsr_model.weights import DEFAULT_WEIGHTS, ModelConfig, build_networks, load_weights, save_weights
from tests.helpers import rgb_image

V2_WEIGHTS = DEFAULT_WEIGHTS.with_name("hndsr-2.0.0.safetensors")


@pytest.fixture(scope="module")
def pipeline() -> HNDSRPipeline:
    return HNDSRPipeline.from_pretrained(device="cpu")


@pytest.mark.parametrize("scale", range(2, 9))
def test_the_map_has_the_outputs_size_at_every_scale(pipeline: HNDSRPipeline, scale: int) -> None:
    result = pipeline.upscale(rgb_image(20, 24), UpscaleOptions(scale, uncertainty=True))
    assert result.uncertainty is not None
    assert result.uncertainty.shape == (20 * scale, 24 * scale) and result.uncertainty.dtype == np.float32
    assert np.isfinite(result.uncertainty).all() and (result.uncertainty > 0).all()


@pytest.mark.parametrize("steps", [0, 2])
def test_asking_for_the_map_leaves_the_output_unchanged(pipeline: HNDSRPipeline, steps: int) -> None:
    image = rgb_image(24, 24)
    plain = pipeline.upscale(image, UpscaleOptions(2, ddim_steps=steps, seed=3))
    mapped = pipeline.upscale(image,
                              UpscaleOptions(2, ddim_steps=steps, seed=3, uncertainty=True, uncertainty_samples=3))
    assert plain.uncertainty is None
    assert np.array_equal(plain.image, mapped.image)


def test_the_output_runs_in_the_same_batches_with_or_without_the_map(pipeline: HNDSRPipeline) -> None:
    # A convolution's rounding depends on its batch size on some CPUs (oneDNN picks kernels by it), so the
    # bytes above hold everywhere only if the map leaves the output's batches as they are.
    tiled = HNDSRPipeline(pipeline.model, pipeline.device, tile_size=32, tile_overlap=8, tile_batch=4)
    batches: list[tuple[str, int]] = []
    hooks = [network.register_forward_hook(lambda module, args, out, name=name: batches.append((name, len(args[0]))))
             for name, network in (("denoiser", tiled.model.denoiser), ("operator", tiled.model.operator.head))]
    try:
        tiled.upscale(rgb_image(24, 60), UpscaleOptions(2, ddim_steps=2, seed=3))
        plain, batches[:] = list(batches), []
        tiled.upscale(rgb_image(24, 60),
                      UpscaleOptions(2, ddim_steps=2, seed=3, uncertainty=True, uncertainty_samples=3))
    finally:
        for hook in hooks:
            hook.remove()
    assert plain == [("operator", 3)] + [("denoiser", 3)] * 2  # one row of three tiles, two diffusion steps
    assert batches == plain + [("denoiser", 3)] * 4  # then one pass of the same tiles per extra sample


def test_the_map_is_deterministic_for_a_seed(pipeline: HNDSRPipeline) -> None:
    image = rgb_image(24, 24)
    maps = [pipeline.upscale(image, UpscaleOptions(2, ddim_steps=2, seed=seed, uncertainty=True,
                                                   uncertainty_samples=3)).uncertainty for seed in (7, 7, 8)]
    assert np.array_equal(maps[0], maps[1])
    assert not np.array_equal(maps[0], maps[2])


def test_diffusion_samples_only_widen_the_map(pipeline: HNDSRPipeline) -> None:
    image = rgb_image(24, 24)
    head = pipeline.upscale(image, UpscaleOptions(2, uncertainty=True)).uncertainty
    sampled = pipeline.upscale(image, UpscaleOptions(2, ddim_steps=2, seed=1, uncertainty=True,
                                                     uncertainty_samples=4)).uncertainty
    assert head is not None and sampled is not None
    assert (sampled >= head - 1e-6).all() and (sampled > head + 1e-6).any()


def test_batched_and_tiled_maps_agree_with_the_plain_one(pipeline: HNDSRPipeline) -> None:
    image = rgb_image(60, 60)
    plain = pipeline.upscale(image, UpscaleOptions(2, uncertainty=True)).uncertainty
    batched = HNDSRPipeline(pipeline.model, pipeline.device, tile_batch=4, batch_wait_ms=1.0)
    tiled = HNDSRPipeline(pipeline.model, pipeline.device, tile_size=32, tile_overlap=8)
    assert np.abs(batched.upscale(image, UpscaleOptions(2, uncertainty=True)).uncertainty - plain).max() < 1e-5
    # Tiles see less context at their edges; the blended map stays close.
    assert np.median(np.abs(tiled.upscale(image,
                                          UpscaleOptions(2, uncertainty=True)).uncertainty - plain) / plain) < 0.1


def test_the_sample_count_is_bounded(pipeline: HNDSRPipeline) -> None:
    for samples in (1, 17):
        with pytest.raises(ValueError, match="uncertainty_samples"):
            pipeline.upscale(rgb_image(16, 16),
                             UpscaleOptions(2, ddim_steps=1, seed=0, uncertainty=True, uncertainty_samples=samples))


def test_weights_without_a_head_refuse_the_map() -> None:
    old = HNDSRPipeline.from_pretrained(V2_WEIGHTS, device="cpu")
    assert not old.has_uncertainty
    with pytest.raises(UncertaintyUnavailable, match="no uncertainty head"):
        old.upscale(rgb_image(16, 16), UpscaleOptions(2, uncertainty=True))


def test_the_head_round_trips_through_the_weights_file(tmp_path: Path) -> None:
    config = ModelConfig(operator={"channels": 8, "blocks": 1, "modes": 4}, denoiser={"channels": 8, "blocks": 1},
                         uncertainty={"head": {"feature_channels": 8}, "calibration": {str(s): 1.5 for s in range(2, 9)}})
    operator, denoiser = build_networks(config)
    head = UncertaintyHead(feature_channels=8)
    torch.nn.init.normal_(head.out.weight, std=0.1)
    save_weights(tmp_path / "w.safetensors", operator, denoiser, config, "test", uncertainty=head)
    loaded = load_weights(tmp_path / "w.safetensors")
    assert loaded.uncertainty is not None and loaded.config.calibration(4) == 1.5
    for mine, theirs in zip(head.state_dict().values(), loaded.uncertainty.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs)
    with pytest.raises(ValueError, match="go together"):
        save_weights(tmp_path / "x.safetensors", operator, denoiser, config, "test")


def test_calibration_puts_two_sigma_at_the_coverage_asked() -> None:
    error = torch.randn(200_000, generator=torch.Generator().manual_seed(0)) * 3
    factor = calibration_factor(torch.ones_like(error), error)
    assert factor == pytest.approx(3.0, rel=0.03)  # N(0, 9): 2 x 3 sigma covers 95.4 %


def test_the_likelihood_is_lowest_at_the_true_sigma() -> None:
    error = torch.randn(100_000, generator=torch.Generator().manual_seed(1)) * 0.05
    losses = {s: gaussian_nll(torch.full_like(error, float(np.log(s))), error).item() for s in (0.025, 0.05, 0.1)}
    assert min(losses, key=losses.get) == 0.05


def test_samples_add_their_variance_in_quadrature() -> None:
    head = torch.full((1, 1, 2, 2), 0.03)
    samples = torch.stack([torch.zeros(2, 2), torch.full((2, 2), 0.08)])[None]  # variance 0.0032 (unbiased)
    assert torch.allclose(combine(head, samples), torch.full((1, 1, 2, 2), (0.03**2 + 0.0032) ** 0.5))
    assert combine(head, None) is head
    assert torch.allclose(luma(torch.ones(1, 3, 1, 1)), torch.ones(1, 1, 1, 1))


def test_uncertainty_training_exports_a_calibrated_head_and_operator_training_drops_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data" / "a"
    data.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rgb_image(128, 128, seed=i)).save(data / f"{i}.png")
    common = ["--data", str(tmp_path / "data"), "--batch", "2", "--device", "cpu", "--arch", "v2", "--log-every", "1",
              "--denoiser-iters", "0"]
    headed = tmp_path / "headed.safetensors"
    train.main([*common, "--init", str(V2_WEIGHTS), "--operator-iters", "0", "--uncertainty-iters", "2",
                "--checkpoint-dir", str(tmp_path / "ck1"), "--out", str(headed)])
    assert "[uncertainty] step 2" in capsys.readouterr().out
    model = load_weights(headed)
    assert model.uncertainty is not None and set(model.config.uncertainty["calibration"]) == {str(s) for s in range(2, 9)}
    retrained = tmp_path / "retrained.safetensors"
    train.main([*common, "--init", str(headed), "--operator-iters", "1", "--checkpoint-dir", str(tmp_path / "ck2"),
                "--out", str(retrained)])
    assert load_weights(retrained).uncertainty is None  # it learnt the old operator's errors


def test_the_maps_scores_reward_a_map_that_follows_the_error() -> None:
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sigma = np.linspace(0.005, 0.1, 64 * 64, dtype=np.float32).reshape(64, 64)
    noise = rng.standard_normal((64, 64, 1)) * sigma[..., None] * 255
    output = np.clip(hr + noise, 0, 255).round().astype(np.uint8)
    scores, pooled = uncertainty_scores(output, sigma, hr, border=2)
    assert scores["spearman"] > 0.4 and scores["top_bottom_error_ratio"] > 5
    assert 0.9 < scores["coverage_2sigma"] < 0.99
    assert pooled.shape[0] == 3


def test_gmsd_and_spearman() -> None:
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    blurred = np.asarray(Image.fromarray(image).resize((32, 32)).resize((64, 64), Image.BICUBIC))
    assert gmsd(image, image, 2) == pytest.approx(0.0, abs=1e-12) and gmsd(blurred, image, 2) > 0.01
    assert np.array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [2.5, 0.0, 2.5, 1.0])
    assert spearman(np.arange(10.0), np.arange(10.0) ** 3) == pytest.approx(1.0)
