"""Operator v2 and the v1 fast paths: shapes at every scale, exactness against reference formulas, loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hndsr_model.operator import NeuralOperatorSR, ScaleAwareDecoder, SpectralMixing, spectral_bases
from hndsr_model.operator_v2 import ESA, LocalFeatureBlock, NeuralOperatorSRv2
from hndsr_model.options import UpscaleOptions
from hndsr_model.weights import ModelConfig, WeightsError, build_networks, load_weights, manifest_path, save_weights

SMALL = {"channels": 8, "blocks": 1, "modes": 4, "local_blocks": 2, "local_convs": 2, "esa_channels": 4}


def fft_spectral(layer: SpectralMixing, x: torch.Tensor) -> torch.Tensor:
    """The FFT formulation v1 was trained with (rfft2, keep the lowest modes, irfft2)."""
    height, width = x.shape[-2:]
    spectrum = torch.fft.rfft2(x, norm="ortho")
    rows, cols = min(layer.modes, height // 2), min(layer.modes, spectrum.shape[-1])
    weight = torch.view_as_complex(layer.weight)
    out = torch.zeros_like(spectrum)
    out[..., :rows, :cols] = spectrum[..., :rows, :cols] * weight[:, :rows, :cols]
    out[..., -rows:, :cols] = spectrum[..., -rows:, :cols] * weight[:, -rows:, :cols]
    return torch.fft.irfft2(out, s=(height, width), norm="ortho")


def einsum_decoder(decoder: ScaleAwareDecoder, features: torch.Tensor, scale: int) -> torch.Tensor:
    """The unfold + einsum formulation of the decoder v1 was trained with."""
    batch, _, height, width = features.shape
    patches = F.unfold(features, 3, padding=1).view(batch, -1, height, width)
    out = torch.einsum("bkhw,ijko->bohiwj", patches, decoder.kernels(scale, features.device))
    return out.reshape(batch, decoder.out_channels, height * scale, width * scale)


@pytest.mark.parametrize("size", [(16, 16), (13, 17), (6, 5), (40, 31), (3, 4)])
def test_dft_spectral_matches_fft(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    layer = SpectralMixing(6, 5)
    x = torch.randn(2, 6, *size)
    assert torch.allclose(layer(x), fft_spectral(layer, x), atol=1e-5)


def test_spectral_bases_made_once_per_shape_serve_inference_and_training() -> None:
    """The DFT bases are cached per shape. Ones first made under ``inference_mode`` (the service) must not be
    inference tensors: training on the same shape afterwards saves them for its backward pass."""
    spectral_bases.cache_clear()
    torch.manual_seed(0)
    layer = SpectralMixing(6, 5)
    x = torch.randn(2, 6, 13, 17)
    with torch.inference_mode():
        served = layer(x)
    trained = layer(x)
    trained.square().sum().backward()
    assert torch.equal(trained.detach(), served) and layer.weight.grad is not None
    assert spectral_bases.cache_info().currsize == 1 and spectral_bases.cache_info().hits == 1


@pytest.mark.parametrize("scale", range(2, 9))
def test_conv_decoder_matches_einsum(scale: int) -> None:
    torch.manual_seed(scale)
    decoder = ScaleAwareDecoder(8)
    torch.nn.init.normal_(decoder.kernel_net[-1].weight)
    features = torch.randn(2, 8, 7, 9)
    assert torch.allclose(decoder(features, scale), einsum_decoder(decoder, features, scale), atol=1e-4)


@pytest.mark.parametrize("scale", range(2, 9))
@pytest.mark.parametrize("spectral", [True, False])
def test_v2_shapes_every_scale(scale: int, spectral: bool) -> None:
    net = NeuralOperatorSRv2(**SMALL, spectral=spectral).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 13, 17), scale)
    assert out.shape == (2, 3, 13 * scale, 17 * scale)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (9, 9), (64, 48)])
def test_blocks_keep_shape_on_any_tile(size: tuple[int, int]) -> None:
    x = torch.rand(2, 8, *size)
    assert ESA(8, 4)(x).shape == x.shape
    assert LocalFeatureBlock(8, 5, convs=3, esa_channels=4)(x, torch.rand(2, 5)).shape == x.shape


def test_v2_from_v1_starts_as_v1_and_learns() -> None:
    torch.manual_seed(0)
    v1 = NeuralOperatorSR(channels=8, blocks=1, modes=4)
    for param in v1.parameters():
        torch.nn.init.normal_(param, std=0.1)
    v2 = NeuralOperatorSRv2(**SMALL)
    v2.load_v1(v1.state_dict())
    lr = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(v2(lr, 3), v1(lr, 3), atol=1e-6)
    for param in v2.trunk_parameters():
        param.requires_grad_(False)
    F.l1_loss(v2(lr, 3), torch.rand(2, 3, 36, 36)).backward()
    assert all(p.grad is None for p in v2.trunk_parameters())
    assert v2.refine[0].proj.weight.grad.abs().sum() > 0  # the zero projection is where learning starts


def test_load_v1_rejects_other_states() -> None:
    with pytest.raises(ValueError, match="not a v1 operator"):
        NeuralOperatorSRv2(**SMALL).load_v1({"nonsense.weight": torch.zeros(1)})


def test_v2_weights_round_trip(tmp_path: Path) -> None:
    config = ModelConfig(operator=SMALL, arch="v2", denoiser={"channels": 8, "blocks": 1})
    operator, denoiser = build_networks(config)
    path = tmp_path / "v2.safetensors"
    save_weights(path, operator, denoiser, config, "2.0.0-test")
    model = load_weights(path)
    assert isinstance(model.operator, NeuralOperatorSRv2) and model.version == "2.0.0-test"
    assert model.config.arch == "v2" and model.config.noise_temperature == 1.0
    lr = torch.rand(1, 3, 10, 10)
    assert torch.equal(model.operator(lr, 4), operator.eval()(lr, 4))


def test_v1_manifest_without_arch_loads_v1(tmp_path: Path) -> None:
    config = ModelConfig(operator={"channels": 8, "blocks": 1, "modes": 4}, denoiser={"channels": 8, "blocks": 1})
    path = tmp_path / "v1.safetensors"
    save_weights(path, *build_networks(config), config, "1.0.0")
    manifest = json.loads(manifest_path(path).read_text())
    del manifest["config"]["arch"]
    manifest_path(path).write_text(json.dumps(manifest))
    model = load_weights(path)
    assert type(model.operator) is NeuralOperatorSR and model.config.arch == "v1"


def test_unknown_arch_is_a_weights_error(tmp_path: Path) -> None:
    config = ModelConfig(operator={"channels": 8, "blocks": 1, "modes": 4}, denoiser={"channels": 8, "blocks": 1})
    path = tmp_path / "w.safetensors"
    save_weights(path, *build_networks(config), config, "1.0.0")
    manifest = json.loads(manifest_path(path).read_text())
    manifest["config"]["arch"] = "v9"
    manifest_path(path).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="unknown operator arch"):
        load_weights(path)


def test_pipeline_serves_v2_weights_with_and_without_diffusion(tmp_path: Path) -> None:
    from hndsr_model.pipeline import HNDSRPipeline
    from tests.helpers import rgb_image

    config = ModelConfig(operator=SMALL, arch="v2", denoiser={"channels": 8, "blocks": 1})
    path = tmp_path / "v2.safetensors"
    save_weights(path, *build_networks(config), config, "2.0.0-test")
    pipeline = HNDSRPipeline.from_pretrained(path, device="cpu", tile_size=32, tile_overlap=4)
    for steps in (0, 2):
        result = pipeline.upscale(rgb_image(40, 36), UpscaleOptions(3, ddim_steps=steps, seed=0))
        assert result.image.shape == (120, 108, 3) and result.tiles > 1
