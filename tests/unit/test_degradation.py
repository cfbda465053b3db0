"""The on-device degradations: the protocol's bicubic matches Pillow; the realistic pipeline is sane."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hndsr_model import degradation
from hndsr_model.data import list_images, load_rgb, make_pair
from tests.helpers import DATA, requires_data, rgb_image


def torch_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    tensor = torch.from_numpy(hr.copy()).permute(2, 0, 1)[None].float()
    return degradation.bicubic(tensor, scale)[0].permute(1, 2, 0).to(torch.uint8).numpy()


@pytest.mark.parametrize("scale", range(2, 9))
def test_bicubic_matches_pillow_within_one_grey_level(scale: int) -> None:
    hr, lr = make_pair(rgb_image(96, 120, seed=scale), scale)
    assert np.abs(torch_lr(hr, scale).astype(int) - lr.astype(int)).max() <= 1


@requires_data("rsscn7", "val")
@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_bicubic_matches_pillow_on_real_images(scale: int) -> None:
    for path in list_images(DATA / "rsscn7" / "val")[::10]:
        hr, lr = make_pair(load_rgb(path), scale)
        assert np.abs(torch_lr(hr, scale).astype(int) - lr.astype(int)).max() <= 1


def test_realistic_is_seeded_integer_and_sized() -> None:
    smooth = np.asarray(Image.fromarray(rgb_image(24, 24)).resize((96, 96), Image.BICUBIC))
    hr = torch.from_numpy(smooth.copy()).permute(2, 0, 1)[None].float().repeat(4, 1, 1, 1)
    a = degradation.realistic(hr, 4, torch.Generator().manual_seed(1))
    b = degradation.realistic(hr, 4, torch.Generator().manual_seed(1))
    c = degradation.realistic(hr, 4, torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, a.round()) and a.min() >= 0 and a.max() <= 255
    assert 0.5 < (a - degradation.bicubic(hr, 4)).abs().mean() < 10  # degraded, but the same scene


def test_realistic_without_degradations_is_aligned_with_bicubic() -> None:
    smooth = np.asarray(Image.fromarray(rgb_image(24, 24)).resize((96, 96), Image.BICUBIC))
    hr = torch.from_numpy(smooth.copy()).permute(2, 0, 1)[None].float()
    mild = degradation.RealisticSettings(blur_sigma=(0.2, 0.2), anisotropic=0, noise_sigma=(0, 0), jpeg_probability=0)
    lr = degradation.realistic(hr, 4, torch.Generator().manual_seed(0), mild)
    assert (lr - degradation.bicubic(hr, 4)).abs().mean() < 0.5  # no half-pixel shift between the two paths


def test_jpeg_like_quality_orders_error() -> None:
    image = torch.from_numpy(rgb_image(40, 56, seed=5).copy()).permute(2, 0, 1)[None].float()
    errors = [(degradation.jpeg_like(image, torch.tensor([q])) - image).abs().mean().item() for q in (100, 75, 20)]
    assert errors[0] < 2.5 and errors[0] < errors[1] < errors[2]  # 4:2:0 chroma costs ~2 even at 100


def test_jpeg_like_is_close_to_pillow_jpeg() -> None:
    array = rgb_image(64, 64, seed=7)
    image = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float()
    ours = degradation.jpeg_like(image, torch.tensor([60])).round().clamp(0, 255)[0].permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=60)
    pillow = np.asarray(Image.open(buffer)).astype(float)
    error_vs_original = np.abs(pillow - array).mean()
    assert np.abs(ours - pillow).mean() < 1.5 < error_vs_original  # ~0.8 measured: libjpeg's tables and 4:2:0


def test_gaussian_kernels_normalised_and_oriented() -> None:
    k = degradation.gaussian_kernels(torch.tensor([3.0]), torch.tensor([0.5]), torch.tensor([0.0]), 13)[0]
    assert torch.isclose(k.sum(), torch.tensor(1.0))
    assert k[6].sum() > k[:, 6].sum()  # wide along x when theta = 0


def test_target_sensor_has_the_gaussian_mtf_and_keeps_the_mean() -> None:
    # A horizontal cosine at frequency f (cycles per pixel) keeps the sampled kernel's response at f.
    x = torch.arange(64, dtype=torch.float32)
    wave = 128 + 100 * torch.cos(2 * math.pi * x / 8)  # f = 1/8
    image = wave.expand(1, 3, 64, 64).contiguous()
    middle = degradation.target_sensor(image, 0.5)[0, 0, 32, 16:48]  # four periods, away from the padding
    assert middle.mean().item() == pytest.approx(128, abs=1e-3)
    amplitude = (middle.max() - middle.min()).item() / 2
    taps = {k: math.exp(-(k**2) / (2 * 0.5**2)) for k in range(-2, 3)}
    response = sum(w * math.cos(2 * math.pi * k / 8) for k, w in taps.items()) / sum(taps.values())
    assert amplitude == pytest.approx(100 * response, rel=1e-3)
