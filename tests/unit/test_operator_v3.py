"""The v3 candidate trunk: re-parameterised convolutions that train as branches and serve as one 3x3 convolution."""

from __future__ import annotations

from pathlib import Path

import torch

from hndsr_model.export import TileSuperResolver
from hndsr_model.operator_v3 import Conv3XC, NeuralOperatorSRv3
from hndsr_model.train import arch_operator
from hndsr_model.weights import ModelConfig, build_networks, load_weights, save_weights


def test_the_composed_kernel_is_the_branches() -> None:
    torch.manual_seed(0)
    conv = Conv3XC(8)
    x = torch.randn(2, 8, 12, 12)
    chain = conv.reduce(conv.spatial(conv.expand(x))) + conv.skip(x)[:, :, 1:-1, 1:-1]  # valid pixels only
    assert torch.allclose(conv(x)[:, :, 1:-1, 1:-1], chain, atol=1e-5)
    conv(x).sum().backward()  # trained through its branches
    assert conv.expand.weight.grad is not None and conv.skip.weight.grad is not None


def test_collapsing_changes_neither_the_output_nor_the_state_dict() -> None:
    torch.manual_seed(1)
    operator = NeuralOperatorSRv3(**arch_operator("v3")).eval()
    lr, keys = torch.rand(1, 3, 20, 24), set(operator.state_dict())
    with torch.inference_mode():
        before = operator(lr, 3)
        after = operator.collapse()(lr, 3)
    assert torch.allclose(before, after, atol=1e-6)
    assert set(operator.state_dict()) == keys


def test_v3_weights_load_collapsed_and_export_without_spectral_mixing(tmp_path: Path) -> None:
    config = ModelConfig(operator=arch_operator("v3", spectral=False), arch="v3", denoiser={"channels": 8, "blocks": 1})
    operator, denoiser = build_networks(config)
    assert all(block.spectral is None for block in operator.body)
    path = tmp_path / "v3.safetensors"
    save_weights(path, operator, denoiser, config, "3.0.0-test")
    loaded = load_weights(path)
    convs = [conv for conv in loaded.operator.modules() if isinstance(conv, Conv3XC)]
    assert all(conv.fused_weight is not None for conv in convs)
    lr = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        expected = operator.eval()(lr, 2)
        assert torch.allclose(loaded.operator(lr, 2), expected, atol=1e-5)
        assert torch.allclose(TileSuperResolver(loaded.operator, 2, 32)(lr), expected.clamp(0, 1), atol=1e-5)
    # Fine-tuning loaded weights (train --init) trains the branches again, not a frozen collapsed kernel.
    loaded.operator.train().requires_grad_(True)
    assert all(conv.fused_weight is None for conv in convs)
    loaded.operator(lr, 2).sum().backward()
    assert all(conv.expand.weight.grad is not None for conv in convs)
