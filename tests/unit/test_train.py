"""Training runs end to end on a tiny folder, exports loadable weights and resumes from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from hndsr_model import degradation, train
from hndsr_model.weights import load_weights
from tests.helpers import rgb_image


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rgb_image(128, 128, seed=i)).save(tmp_path / "data" / cls / f"{i}.png")
    return tmp_path / "data"


def test_train_exports_and_resumes(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--data", str(folder), "--per-folder", "1", "--out", str(tmp_path / "w.safetensors"),
            "--checkpoint-dir", str(tmp_path / "ck"), "--batch", "2", "--log-every", "1",
            "--checkpoint-every", "2", "--device", "cpu"]
    train.main([*args, "--operator-iters", "2", "--denoiser-iters", "1"])
    out = capsys.readouterr().out
    assert "training on 2 images" in out and "[operator] step 2" in out
    model = load_weights(tmp_path / "w.safetensors")
    assert model.config.residual_scale > 0
    train.main([*args, "--operator-iters", "3", "--denoiser-iters", "1"])
    assert "[operator] resumed at step 2" in capsys.readouterr().out


def test_sampler_crops_are_dihedral_views_of_the_images(folder: Path) -> None:
    sampler = train.PatchSampler(folder, torch.device("cpu"), seed=0)
    assert len(sampler) == 4 and sampler.images.dtype == torch.uint8
    crops = sampler.crops(16, 24)
    assert crops.shape == (16, 3, 24, 24) and crops.dtype == torch.uint8
    for crop in crops:
        views = [v for k in range(4) for v in (torch.rot90(crop, k, (-2, -1)), torch.rot90(crop.flip(-1), k, (-2, -1)))]
        found = any(
            torch.equal(view, image[:, y : y + 24, x : x + 24])
            for image in sampler.images for view in views
            for y in range(image.shape[1] - 23) for x in range(image.shape[2] - 23)
            if image[0, y, x] == view[0, 0, 0]
        )
        assert found


@pytest.mark.parametrize("realistic", [0.0, 1.0])
def test_sampler_batch_is_protocol_degradation(folder: Path, realistic: float) -> None:
    sampler = train.PatchSampler(folder, torch.device("cpu"), seed=0, realistic=realistic)
    lr, hr, scale = sampler.batch(4)
    assert hr.shape[-1] == lr.shape[-1] * scale and lr.shape[0] == 4
    assert torch.equal(lr * 255, (lr * 255).round()) and 0 <= lr.min() and lr.max() <= 1
    protocol = degradation.bicubic(hr * 255, scale) / 255
    assert torch.equal(lr, protocol) == (realistic == 0.0)


def test_sampler_target_sigma_blurs_the_target_not_the_lr(folder: Path) -> None:
    sharp = train.PatchSampler(folder, torch.device("cpu"), seed=0, realistic=1.0).batch(4, scale=3)
    soft = train.PatchSampler(folder, torch.device("cpu"), seed=0, realistic=1.0, target_sigma=0.5).batch(4, scale=3)
    assert torch.equal(sharp[0], soft[0])
    assert torch.allclose(soft[1], degradation.target_sensor(sharp[1] * 255, 0.5) / 255)
    assert soft[1].diff(dim=-1).abs().mean() < sharp[1].diff(dim=-1).abs().mean()


def test_sampler_ground_scale_shrinks_larger_crops_to_the_patch(folder: Path) -> None:
    sampler = train.PatchSampler(folder, torch.device("cpu"), seed=0, ground_scale=4.0)
    assert sampler.lr_patch(2) == 64 and sampler.lr_patch(2, ground=4.0) == 16
    sizes = set()
    for _ in range(8):
        lr, hr, scale = sampler.batch(2, scale=2)
        assert hr.shape[-1] == lr.shape[-1] * 2 and torch.equal(lr, degradation.bicubic(hr * 255, 2) / 255)
        assert torch.equal(hr * 255, (hr * 255).round())
        sizes.add(lr.shape[-1])
    assert len(sizes) > 1 and max(sizes) < 64  # each batch its own ground factor, every one above 1


def test_lr_scaling() -> None:
    assert train.scaled_lr(1e-4, 1024, 64) == pytest.approx(4e-4)
    assert train.scaled_lr(1e-4, 1024, 0) == 1e-4


def test_v2_from_v1_frozen_trunk_resumes_and_exports(folder: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    v1 = tmp_path / "v1.safetensors"
    common = ["--data", str(folder), "--batch", "2", "--log-every", "1", "--device", "cpu", "--denoiser-iters", "0"]
    train.main([*common, "--out", str(v1), "--checkpoint-dir", str(tmp_path / "ck1"), "--operator-iters", "1"])
    args = [*common, "--arch", "v2", "--init", str(v1), "--freeze-trunk", "--out", str(tmp_path / "v2.safetensors"),
            "--checkpoint-dir", str(tmp_path / "ck2"), "--checkpoint-every", "2", "--bf16", "--channels-last",
            "--compile", "--lr-reference-batch", "1", "--version", "2.0.0-test"]
    train.main([*args, "--operator-iters", "2"])
    out = capsys.readouterr().out
    assert "arch v2" in out and "samples/s" in out and "CUDA only" in out
    first = load_weights(tmp_path / "v2.safetensors")
    trunk = load_weights(v1).operator
    assert first.version == "2.0.0-test" and first.config.arch == "v2"
    assert torch.equal(first.operator.head.weight, trunk.head.weight)  # frozen
    assert torch.equal(first.denoiser.head.weight, load_weights(v1).denoiser.head.weight)
    train.main([*args, "--operator-iters", "3"])
    assert "[operator] resumed at step 2" in capsys.readouterr().out
    exported = tmp_path / "exported.safetensors"
    train.main([*args, "--export-checkpoint", "--out", str(exported)])
    lr = torch.rand(1, 3, 12, 12)
    assert torch.equal(load_weights(exported).operator(lr, 3), load_weights(tmp_path / "v2.safetensors").operator(lr, 3))
