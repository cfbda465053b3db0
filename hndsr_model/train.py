"""Train HNDSR on a folder of HR images: ``python -m hndsr_model.train --data DIR``.

Stage 1 trains the neural operator (L1 on the protocol's bicubic degradation, every scale 2-8);
stage 2 freezes it and trains the residual denoiser (v-prediction). Training is seeded, prints
progress, writes a resumable safetensors checkpoint every ``--checkpoint-every`` steps, stops at
``--iters`` or ``--minutes`` (whichever comes first, the learning-rate schedule following the
nearer one) and exports the weights and manifest the service loads.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from . import degradation
from .data import list_images, load_rgb
from .diffusion import UNSHUFFLE, encode_condition, encode_residual
from .operator_v2 import NeuralOperatorSRv2
from .pipeline import resolve_device
from .sampler import T_MAX, add_noise
from .uncertainty import UncertaintyHead, calibration_factor, gaussian_nll, luma
from .weights import (
    DEFAULT_WEIGHTS,
    OPERATORS,
    ModelConfig,
    build_networks,
    flatten_state,
    load_weights,
    module_state,
    save_weights,
)

# Scales 2-4 carry the quality bar, so they are drawn three times as often as 5-8.
SCALE_WEIGHTS = {2: 3, 3: 3, 4: 3, 5: 1, 6: 1, 7: 1, 8: 1}
MAX_LR_PATCH = 64


class PatchSampler:
    """Random HR crops and their LR, cut, augmented and degraded on ``device`` in whole batches.

    The training set is decoded once into ``device`` memory as uint8 (840 RSSCN7 images: 403 MB);
    crops, the 8 flips/rotations and the degradation are batched tensor operations, so on a GPU no
    step waits on the host. The same code runs on the CPU. ``realistic`` is the fraction of samples
    degraded by :func:`degradation.realistic` instead of the protocol's bicubic; ``target_sigma > 0`` makes
    every HR target what a coarser sensor would see (:func:`degradation.target_sensor`), the LR still coming
    from the sharp crop. ``ground_scale > 1`` draws, per batch, a factor ``g`` uniformly from ``[1, ground_scale]``
    and shrinks a ``g`` times larger crop to the HR patch (antialiased bicubic): the same ground at a ``g`` times
    coarser sampling distance, nearer that of 10-30 m sensors than RSSCN7's 0.3-1 m.
    """

    def __init__(
        self, folder: Path, device: torch.device, seed: int, per_folder: int = 0, realistic: float = 0.0,
        target_sigma: float = 0.0, ground_scale: float = 1.0,
    ) -> None:
        paths = list_images(folder)
        if per_folder:  # the first N (sorted) of each sub-folder, e.g. of each RSSCN7 class
            by_folder: dict[Path, list[Path]] = {}
            for path in paths:
                by_folder.setdefault(path.parent, []).append(path)
            paths = [p for group in by_folder.values() for p in group[:per_folder]]
        if not paths:
            raise SystemExit(f"no images found under {folder}")
        arrays = [load_rgb(p) for p in paths]
        height = min(a.shape[0] for a in arrays)
        width = min(a.shape[1] for a in arrays)
        # One uint8 tensor; images larger than the smallest are cut to it (RSSCN7: all 400x400).
        self.images = torch.stack([torch.from_numpy(a[:height, :width].copy()) for a in arrays])
        self.images = self.images.permute(0, 3, 1, 2).contiguous().to(device)
        self.min_side = min(height, width)
        self.device = device
        self.realistic = realistic
        self.target_sigma = target_sigma
        self.ground_scale = ground_scale
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Start the stream of crops, augmentations, scales and degradations again from ``seed``."""
        self.rng = random.Random(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return self.images.shape[0]

    def lr_patch(self, scale: int, ground: float = 1.0) -> int:
        """LR patch side at ``scale`` when a crop ``ground`` times the HR patch is shrunk to it."""
        return min(MAX_LR_PATCH, int(self.min_side / (ground * scale)) // UNSHUFFLE * UNSHUFFLE)

    def crops(self, size: int, hr_size: int) -> torch.Tensor:
        """``(size, 3, hr_size, hr_size)`` uint8 random crops, randomly flipped and rotated."""
        n, _, height, width = self.images.shape
        randint = lambda high: torch.randint(high, (size,), generator=self.generator, device=self.device)  # noqa: E731
        index, y, x = randint(n), randint(height - hr_size + 1), randint(width - hr_size + 1)
        offsets = torch.arange(hr_size, device=self.device)
        rows = (y[:, None] + offsets)[:, None, :, None]
        cols = (x[:, None] + offsets)[:, None, None, :]
        channels = torch.arange(3, device=self.device)[None, :, None, None]
        crops = self.images[index[:, None, None, None], channels, rows, cols]
        # The dihedral group: optional transpose, then optional horizontal and vertical flips.
        flips = torch.rand(size, 3, generator=self.generator, device=self.device) < 0.5
        crops = torch.where(flips[:, 0, None, None, None], crops.transpose(-2, -1), crops)
        crops = torch.where(flips[:, 1, None, None, None], crops.flip(-1), crops)
        return torch.where(flips[:, 2, None, None, None], crops.flip(-2), crops)

    def batch(self, size: int, scale: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(lr (B, 3, p, p), hr (B, 3, s*p, s*p), s)`` in [0, 1]; ``scale`` drawn by :data:`SCALE_WEIGHTS`
        unless given."""
        if scale is None:
            scale = self.rng.choices(list(SCALE_WEIGHTS), weights=list(SCALE_WEIGHTS.values()))[0]
        ground = self.rng.uniform(1.0, self.ground_scale) if self.ground_scale > 1 else 1.0
        hr_size = self.lr_patch(scale, ground) * scale
        hr = self.crops(size, min(round(ground * hr_size), self.min_side)).float()
        if hr.shape[-1] != hr_size:
            hr = F.interpolate(hr, size=(hr_size, hr_size), mode="bicubic", antialias=True, align_corners=False)
            hr = hr.round().clamp(0, 255)
        lr = degradation.bicubic(hr, scale)
        if self.realistic > 0:
            real = torch.rand(size, generator=self.generator, device=self.device) < self.realistic
            lr = torch.where(real[:, None, None, None], degradation.realistic(hr, scale, self.generator), lr)
        if self.target_sigma > 0:
            hr = degradation.target_sensor(hr, self.target_sigma)
        return lr / 255, hr / 255, scale


class Checkpoint:
    """Resumable training state as safetensors (tensors) plus JSON (counters); no pickle."""

    def __init__(self, folder: Path, stage: str) -> None:
        self.tensors = folder / f"{stage}.safetensors"
        self.state = folder / f"{stage}.json"

    def save(self, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, state: dict) -> None:
        tensors = flatten_state(modules)
        opt_state = optimizer.state_dict()
        for pid, slots in opt_state["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        self.tensors.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename, so a run killed mid-save still leaves the previous checkpoint intact.
        save_file(tensors, str(self.tensors) + ".tmp")
        self.state.with_suffix(".json.tmp").write_text(json.dumps(state, indent=2))
        os.replace(str(self.tensors) + ".tmp", self.tensors)
        os.replace(self.state.with_suffix(".json.tmp"), self.state)

    def load(self, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer) -> dict | None:
        if not (self.tensors.is_file() and self.state.is_file()):
            return None
        tensors = load_file(str(self.tensors))
        for name, module in modules.items():
            module.load_state_dict(module_state(tensors, name))
        opt_state = optimizer.state_dict()
        device = next(next(iter(modules.values())).parameters()).device
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, slot = key.split(".", 2)
                opt_state["state"].setdefault(int(pid), {})[slot] = value.to(device) if slot != "step" else value
        optimizer.load_state_dict(opt_state)
        return json.loads(self.state.read_text())


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1 - decay)


def lr_at(progress: float, peak: float) -> float:
    """Short linear warm-up, then cosine decay to 2.5 % of ``peak``."""
    if progress < 0.02:
        return peak * progress / 0.02
    return peak * (0.025 + 0.975 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_stage(
    name: str,
    model: nn.Module,
    loss_fn,
    sampler: PatchSampler,
    args: argparse.Namespace,
    iters: int,
    minutes: float,
    clock: Callable[[], float] = time.monotonic,
) -> nn.Module:
    """Generic loop: returns the EMA copy of ``model`` after training. ``minutes`` are of ``clock``: wall time, or
    ``time.process_time`` to budget the CPU time the process itself spends (all its threads), whatever else runs."""
    ema = copy.deepcopy(model).requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    peak = scaled_lr(args.lr, args.batch, args.lr_reference_batch)
    optimizer = torch.optim.Adam(trainable, lr=peak, betas=(0.9, 0.99))
    forward = compiled(model, args)
    device_type = next(model.parameters()).device.type
    autocast = (lambda: torch.autocast(device_type, dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    ckpt = Checkpoint(Path(args.checkpoint_dir), name)
    state = ckpt.load({"model": model, "ema": ema}, optimizer) or {"step": 0, "elapsed": 0.0}
    if state["step"]:
        print(f"[{name}] resumed at step {state['step']}", flush=True)
    start = clock() - state["elapsed"]
    running = 0.0
    window_start, window_steps = time.monotonic(), 0
    while True:
        elapsed = clock() - start
        progress = max(state["step"] / iters, elapsed / (minutes * 60))
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(progress, peak)
        lr, hr, scale = sampler.batch(args.batch)
        if args.channels_last:
            lr, hr = lr.contiguous(memory_format=torch.channels_last), hr.contiguous(memory_format=torch.channels_last)
        with autocast():
            loss = loss_fn(forward, lr, hr, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        update_ema(ema, model, args.ema if state["step"] > 100 else 0.0)
        state["step"] += 1
        window_steps += 1
        running = 0.98 * running + 0.02 * loss.item() if state["step"] > 1 else loss.item()
        if state["step"] % args.log_every == 0:
            rate = window_steps / max(time.monotonic() - window_start, 1e-9)
            print(f"[{name}] step {state['step']} loss {running:.5f} lr {lr_at(progress, peak):.2e} "
                  f"{elapsed / 60:.1f} min {rate:.2f} steps/s {rate * args.batch:.0f} samples/s", flush=True)
            window_start, window_steps = time.monotonic(), 0
        if state["step"] % args.checkpoint_every == 0:
            state["elapsed"] = clock() - start
            ckpt.save({"model": model, "ema": ema}, optimizer, state)
    state["elapsed"] = clock() - start
    ckpt.save({"model": model, "ema": ema}, optimizer, state)
    print(f"[{name}] done: {state['step']} steps in {state['elapsed'] / 60:.1f} min", flush=True)
    return ema


def scaled_lr(lr: float, batch: int, reference_batch: int) -> float:
    """Peak learning rate for ``batch``: ``lr`` was tuned at ``reference_batch`` (0 = no scaling).

    Square-root scaling, the usual rule for Adam: a 16x larger batch gets a 4x larger step.
    """
    return lr if reference_batch <= 0 else lr * math.sqrt(batch / reference_batch)


def compiled(model: nn.Module, args: argparse.Namespace):
    """``torch.compile(model)`` on CUDA when ``--compile`` is given; the model itself otherwise."""
    if args.compile and next(model.parameters()).device.type == "cuda":
        return torch.compile(model)
    if args.compile:
        print("--compile applies on CUDA only; running eagerly", flush=True)
    return model


def operator_loss(model: nn.Module, lr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.l1_loss(model(lr, scale), hr)


def make_denoiser_loss(operator: nn.Module, residual_scale: float):
    def loss(model: nn.Module, lr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
        with torch.no_grad():
            sr = operator(lr, scale)
        x0, cond = encode_residual(hr - sr, residual_scale), encode_condition(sr)
        t = torch.rand(lr.shape[0], device=lr.device) * T_MAX
        x_t, v_target = add_noise(x0, torch.randn_like(x0), t)
        return F.mse_loss(model(x_t, cond, t, scale), v_target)

    return loss


@torch.no_grad()
def operator_error(operator: nn.Module, lr: torch.Tensor, hr: torch.Tensor, scale: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the uncertainty head sees and must predict: the operator's LR features, its output (clamped, as
    served) and the output's luma error."""
    features = operator.forward_features(lr, scale)
    sr = operator.decode(lr, features, scale).clamp(0, 1)
    return features, sr, luma(hr) - luma(sr)


def make_uncertainty_loss(operator: nn.Module):
    """Gaussian NLL of the frozen operator's luma error under the head's sigma."""

    def loss(head: nn.Module, lr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
        features, sr, error = operator_error(operator, lr, hr, scale)
        return gaussian_nll(head(features, sr, scale), error)

    return loss


@torch.no_grad()
def calibrate_uncertainty(operator: nn.Module, head: UncertaintyHead, sampler: PatchSampler,
                          batches: int = 8, size: int = 16) -> dict[str, float]:
    """Per scale, the factor that makes ``2 c sigma`` cover :data:`uncertainty.COVERAGE` of training pixels."""
    factors = {}
    for scale in SCALE_WEIGHTS:
        sigmas, errors = [], []
        for _ in range(batches):
            features, sr, error = operator_error(operator, *sampler.batch(size, scale))
            sigmas.append(head(features, sr, scale).exp())
            errors.append(error)
        factors[str(scale)] = round(calibration_factor(torch.cat(sigmas), torch.cat(errors)), 4)
    return factors


@torch.no_grad()
def estimate_residual_scale(operator: nn.Module, sampler: PatchSampler, batches: int = 8) -> float:
    stds = [(hr - operator(lr, s)).std().item() for lr, hr, s in (sampler.batch(16) for _ in range(batches))]
    return round(float(np.mean(stds)), 4)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="folder of HR training images (required unless --export-checkpoint)")
    p.add_argument("--per-folder", type=int, default=0, help="use only the first N images of each sub-folder")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="exported .safetensors path")
    p.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"))
    p.add_argument("--operator-iters", type=int, default=20000)
    p.add_argument("--operator-minutes", type=float, default=240.0)
    p.add_argument("--denoiser-iters", type=int, default=8000)
    p.add_argument("--denoiser-minutes", type=float, default=60.0)
    p.add_argument("--uncertainty-iters", type=int, default=0,
                   help="train the uncertainty head this long on the frozen operator (0: keep --init's head, if "
                        "the operator is not retrained)")
    p.add_argument("--uncertainty-minutes", type=float, default=20.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--init", type=Path, help="fine-tune from these exported weights instead of a fresh start")
    p.add_argument("--arch", choices=sorted(OPERATORS), default="v1", help="operator network to train")
    p.add_argument("--freeze-trunk", action="store_true",
                   help="v2 only: train the refinement blocks and decoder, keep the (v1) trunk fixed")
    p.add_argument("--no-spectral", action="store_true",
                   help="v2, v3: drop the trunk's Fourier layers (the spectral-mixing ablation)")
    p.add_argument("--realistic", type=float, default=0.0,
                   help="fraction of samples degraded by the realistic pipeline instead of bicubic")
    p.add_argument("--target-sigma", type=float, default=0.0,
                   help="HR targets blurred by a Gaussian PSF of this many HR pixels (a target sensor's MTF); "
                        "evaluate still scores against the sharp HR")
    p.add_argument("--ground-scale", type=float, default=1.0,
                   help="crops up to this many times the patch, shrunk to it: coarser ground sampling (1: off)")
    p.add_argument("--lr-reference-batch", type=int, default=0,
                   help="batch size --lr was tuned for; the peak LR is scaled by sqrt(batch / this)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA or CPU)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA only)")
    p.add_argument("--export-checkpoint", action="store_true",
                   help="only export the EMA weights of --checkpoint-dir's operator checkpoint (with --init's "
                        "denoiser) to --out, without training")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=200)
    return p.parse_args(argv)


# One RLFB-style block of three convolutions: ~1.1x v1's CPU time at x4 (two blocks measured 1.4x,
# over the 1.3x budget).
V2_OPERATOR = {"channels": 48, "blocks": 6, "modes": 12, "local_blocks": 1, "local_convs": 3}
# Four SPAN blocks of three re-parameterised convolutions: 1.03x 2.1.0's operator time for x4 of 256x256
# (python -m benchmarks trunks; the model card, "v3 candidate").
V3_OPERATOR = {"channels": 48, "blocks": 4, "modes": 12, "convs": 3}
ARCH_OPERATORS = {"v1": {"channels": 48, "blocks": 6, "modes": 12}, "v2": V2_OPERATOR, "v3": V3_OPERATOR}


def arch_operator(arch: str, spectral: bool = True) -> dict:
    """The operator configuration a fresh ``arch`` network is trained with."""
    return ARCH_OPERATORS[arch] if spectral else {**ARCH_OPERATORS[arch], "spectral": False}


def initial_networks(args: argparse.Namespace, device: torch.device
                     ) -> tuple[nn.Module, nn.Module, ModelConfig, UncertaintyHead | None]:
    """Networks to train: fresh, or from ``--init``; a v1 ``--init`` for ``--arch v2`` seeds v2's trunk and decoder.
    The last item is ``--init``'s uncertainty head, if it has one."""
    if not args.init:
        operator = arch_operator(args.arch, spectral=not args.no_spectral)
        config = ModelConfig(operator=operator, arch=args.arch, denoiser={"channels": 48, "blocks": 3})
        operator, denoiser = build_networks(config)
        return operator, denoiser, config, None
    init = load_weights(args.init, device)
    operator, config = init.operator, init.config
    if args.arch == "v2" and config.arch == "v1":
        config = ModelConfig(operator={**config.operator, **arch_operator("v2", not args.no_spectral)}, arch="v2",
                             denoiser=config.denoiser, residual_scale=config.residual_scale,
                             noise_temperature=config.noise_temperature)
        operator = NeuralOperatorSRv2(**config.operator).to(device)
        operator.load_v1(init.operator.state_dict())
    elif args.arch != config.arch:
        raise SystemExit(f"--init {args.init} is arch {config.arch}; cannot train it as {args.arch}")
    return operator.requires_grad_(True), init.denoiser.requires_grad_(True), config, init.uncertainty


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # one scale per batch: seven input shapes, each tuned once
    operator, denoiser, config, uncertainty = initial_networks(args, device)
    if args.operator_iters > 0 or args.export_checkpoint:
        # A head learnt another operator's errors: it goes unless it is trained again below.
        uncertainty, config.uncertainty = None, {}
    if args.target_sigma < 0:
        raise SystemExit("--target-sigma is a PSF width in HR pixels: 0 (sharp targets) or more")
    if args.ground_scale < 1:
        raise SystemExit("--ground-scale is a shrink factor: 1 (off) or more")
    if args.no_spectral and args.arch == "v1":
        raise SystemExit("--no-spectral needs --arch v2 or v3")
    if args.freeze_trunk:
        if not isinstance(operator, NeuralOperatorSRv2):
            raise SystemExit("--freeze-trunk needs --arch v2")
        for param in operator.trunk_parameters():
            param.requires_grad_(False)
    if args.channels_last:
        operator, denoiser = (m.to(memory_format=torch.channels_last) for m in (operator, denoiser))
    training = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    if args.export_checkpoint:
        export_checkpoint(operator.to(device), Path(args.checkpoint_dir))
        digest = save_weights(args.out, operator, denoiser, config, args.version, extra={"training": training})
        print(f"wrote {args.out} sha256 {digest}", flush=True)
        return
    if args.data is None:
        raise SystemExit("--data is required for training")
    sampler = PatchSampler(args.data, device, args.seed, args.per_folder, args.realistic, args.target_sigma,
                           args.ground_scale)
    print(f"training on {len(sampler)} images, device {device}, arch {config.arch}", flush=True)
    if args.operator_iters > 0:
        operator = train_stage("operator", operator.to(device).train(), operator_loss, sampler, args,
                               args.operator_iters, args.operator_minutes)
    operator.eval().requires_grad_(False)
    if args.denoiser_iters > 0:
        config.residual_scale = estimate_residual_scale(operator, sampler)
        print(f"residual scale {config.residual_scale}", flush=True)
        denoiser = train_stage("denoiser", denoiser.to(device).train(),
                               make_denoiser_loss(operator, config.residual_scale),
                               sampler, args, args.denoiser_iters, args.denoiser_minutes)
    if args.uncertainty_iters > 0:
        uncertainty = train_uncertainty(operator, uncertainty, config, sampler, args)
    digest = save_weights(args.out, operator, denoiser, config, args.version,
                          extra={"training": training}, uncertainty=uncertainty)
    print(f"wrote {args.out} sha256 {digest}", flush=True)


def train_uncertainty(operator: nn.Module, head: UncertaintyHead | None, config: ModelConfig,
                      sampler: PatchSampler, args: argparse.Namespace) -> UncertaintyHead:
    """Train (or go on training) the uncertainty head on the frozen ``operator``, then calibrate it per scale;
    sets ``config.uncertainty``."""
    options = {"feature_channels": config.operator.get("channels", 48)}
    if head is None:
        head = UncertaintyHead(**options)
    head = train_stage("uncertainty", head.to(sampler.device).train().requires_grad_(True),
                       make_uncertainty_loss(operator), sampler, args, args.uncertainty_iters,
                       args.uncertainty_minutes).eval()
    calibration = calibrate_uncertainty(operator, head, sampler)
    print(f"uncertainty calibration per scale {calibration}", flush=True)
    config.uncertainty = {"head": options, "calibration": calibration}
    return head


def export_checkpoint(operator: nn.Module, folder: Path) -> None:
    """Load the EMA operator of a (possibly still running) training's checkpoint into ``operator``."""
    path = Checkpoint(folder, "operator").tensors
    if not path.is_file():
        raise SystemExit(f"no operator checkpoint at {path}")
    operator.load_state_dict(module_state(load_file(str(path)), "ema"))
    operator.eval().requires_grad_(False)


if __name__ == "__main__":
    main()
