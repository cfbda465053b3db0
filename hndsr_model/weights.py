"""Weights as safetensors with a JSON manifest beside them (config, sha256, measured quality).

Loading checks the file's sha256 against the manifest before a single tensor is read, and every
failure is a :class:`WeightsError` whose message says what to do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .diffusion import ResidualDenoiser
from .operator import NeuralOperatorSR
from .operator_v2 import NeuralOperatorSRv2
from .operator_v3 import NeuralOperatorSRv3
from .options import DEFAULT_VARIANT, VARIANT_FILES, WEIGHTS_DIR
from .uncertainty import UncertaintyHead

MODEL_NAME = "hndsr"
DEFAULT_WEIGHTS = WEIGHTS_DIR / VARIANT_FILES[DEFAULT_VARIANT]


def variant_paths(folder: Path) -> dict[str, Path]:
    """The weights file of each variant in ``folder``: the default's always (a missing one fails when it is
    loaded, with the error that says so), the others' where they are present."""
    paths = {variant: folder / name for variant, name in VARIANT_FILES.items()}
    return {variant: path for variant, path in paths.items() if variant == DEFAULT_VARIANT or path.is_file()}


# The manifest's ``config.arch`` picks the operator network; manifests without it are v1.
OPERATORS: dict[str, type[NeuralOperatorSR]] = {"v1": NeuralOperatorSR, "v2": NeuralOperatorSRv2,
                                                 "v3": NeuralOperatorSRv3}


class WeightsError(RuntimeError):
    """The weights are missing, corrupt, or do not match their manifest."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild the networks; stored in the manifest."""

    operator: dict[str, int] = field(default_factory=dict)
    arch: str = "v1"
    denoiser: dict[str, int] = field(default_factory=dict)
    residual_scale: float = 0.05
    # Std of the sampler's starting noise; below 1 trades texture for fidelity (as in SR3/LDM practice).
    noise_temperature: float = 1.0
    # The uncertainty head, when the weights carry one: {"head": {constructor options},
    # "calibration": {"<scale>": factor}}; empty when they do not.
    uncertainty: dict[str, Any] = field(default_factory=dict)

    def calibration(self, scale: int) -> float:
        return float(self.uncertainty["calibration"][str(scale)])


@dataclass
class LoadedModel:
    operator: NeuralOperatorSR
    denoiser: ResidualDenoiser
    config: ModelConfig
    version: str
    sha256: str
    manifest: dict[str, Any]
    uncertainty: UncertaintyHead | None = None
    path: Path | None = None  # the weights file it was loaded from


def manifest_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def flatten_state(modules: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The modules' state dicts as one flat dict for safetensors: ``<name>.<key>``, contiguous, on the CPU.

    The layout of the exported weights and of the training checkpoints alike.
    """
    return {f"{name}.{key}": value.detach().cpu().contiguous()
            for name, module in modules.items() for key, value in module.state_dict().items()}


def module_state(tensors: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The state dict of module ``name`` inside a dict written by :func:`flatten_state`."""
    prefix = f"{name}."
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


def build_networks(config: ModelConfig) -> tuple[NeuralOperatorSR, ResidualDenoiser]:
    if config.arch not in OPERATORS:
        raise WeightsError(f"unknown operator arch {config.arch!r}; this code knows {sorted(OPERATORS)}")
    return OPERATORS[config.arch](**config.operator), ResidualDenoiser(**config.denoiser)


def build_uncertainty(config: ModelConfig) -> UncertaintyHead | None:
    return UncertaintyHead(**config.uncertainty["head"]) if config.uncertainty else None


def save_weights(
    path: Path,
    operator: NeuralOperatorSR,
    denoiser: ResidualDenoiser,
    config: ModelConfig,
    version: str,
    extra: dict[str, Any] | None = None,
    uncertainty: UncertaintyHead | None = None,
) -> str:
    """Write ``path`` and its manifest; returns the sha256 of the safetensors file.

    ``uncertainty`` (with ``config.uncertainty`` describing it) is stored beside the two networks."""
    if (uncertainty is None) != (not config.uncertainty):
        raise ValueError("an uncertainty head and config.uncertainty go together")
    modules = {"operator": operator, "denoiser": denoiser}
    if uncertainty is not None:
        modules["uncertainty"] = uncertainty
    tensors = flatten_state(modules)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"name": MODEL_NAME, "version": version})
    digest = file_sha256(path)
    manifest = {
        "name": MODEL_NAME,
        "version": version,
        "sha256": digest,
        "config": {
            "arch": config.arch,
            "operator": config.operator,
            "denoiser": config.denoiser,
            "residual_scale": config.residual_scale,
            "noise_temperature": config.noise_temperature,
            **({"uncertainty": config.uncertainty} if config.uncertainty else {}),
        },
        **(extra or {}),
    }
    manifest_path(path).write_text(json.dumps(manifest, indent=2) + "\n")
    return digest


def read_manifest(path: Path) -> dict[str, Any]:
    manifest_file = manifest_path(path)
    if not path.is_file():
        raise WeightsError(f"model weights not found at {path}; train them or restore the file from git")
    if not manifest_file.is_file():
        raise WeightsError(f"weights manifest not found at {manifest_file}")
    try:
        return json.loads(manifest_file.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"weights manifest {manifest_file} is not valid JSON: {exc}") from exc


def load_weights(path: Path = DEFAULT_WEIGHTS, device: str | torch.device = "cpu") -> LoadedModel:
    """Verify and load the networks, in eval mode on ``device``."""
    path = Path(path)
    manifest = read_manifest(path)
    digest = file_sha256(path)
    if digest != manifest.get("sha256"):
        raise WeightsError(
            f"checksum mismatch for {path}: sha256 {digest} != manifest {manifest.get('sha256')}; "
            "the file is corrupt or was replaced"
        )
    try:
        config = ModelConfig(**manifest["config"])
    except TypeError as exc:
        raise WeightsError(f"weights manifest config in {manifest_path(path)} is not understood: {exc}") from exc
    operator, denoiser = build_networks(config)
    uncertainty = build_uncertainty(config)
    tensors = load_file(str(path))
    networks = {"operator": operator, "denoiser": denoiser, "uncertainty": uncertainty}
    for name, net in networks.items():
        if net is None:
            continue
        try:
            net.load_state_dict(module_state(tensors, name), strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"weights in {path} do not fit the configured network: {exc}") from exc
        net.to(device).eval().requires_grad_(False)
    operator.collapse()
    return LoadedModel(operator, denoiser, config, manifest["version"], digest, manifest, uncertainty, path)
