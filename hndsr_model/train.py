"""Train HNDSR on a folder of HR images: ``python -m hndsr_model.train --data DIR``.

Stage 1 trains the neural operator (L1 on the protocol's bicubic degradation, every scale 2-8);
stage 2 freezes it and trains the residual denoiser (v-prediction). Training is seeded, prints
progress, writes a resumable safetensors checkpoint every ``--checkpoint-every`` steps, stops at
``--iters`` or ``--minutes`` (whichever comes first, the learning-rate schedule following the
nearer one) and exports the weights and manifest the service loads.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .data import list_images, load_rgb
from .diffusion import UNSHUFFLE
from .pipeline import resolve_device
from .sampler import T_MAX, add_noise
from .weights import DEFAULT_WEIGHTS, ModelConfig, build_networks, load_weights, save_weights

# Scales 2-4 carry the quality bar, so they are drawn three times as often as 5-8.
SCALE_WEIGHTS = {2: 3, 3: 3, 4: 3, 5: 1, 6: 1, 7: 1, 8: 1}
MAX_LR_PATCH = 64


class PatchSampler:
    """Random HR crops and their bicubic LR, degraded on ``device`` exactly like Pillow."""

    def __init__(self, folder: Path, device: torch.device, seed: int, per_folder: int = 0) -> None:
        paths = list_images(folder)
        if per_folder:  # the first N (sorted) of each sub-folder, e.g. of each RSSCN7 class
            by_folder: dict[Path, list[Path]] = {}
            for path in paths:
                by_folder.setdefault(path.parent, []).append(path)
            paths = [p for group in by_folder.values() for p in group[:per_folder]]
        if not paths:
            raise SystemExit(f"no images found under {folder}")
        self.images = [torch.from_numpy(load_rgb(p).copy()).permute(2, 0, 1).to(device) for p in paths]
        self.min_side = min(min(img.shape[-2:]) for img in self.images)
        self.rng = random.Random(seed)

    def lr_patch(self, scale: int) -> int:
        return min(MAX_LR_PATCH, (self.min_side // scale) // UNSHUFFLE * UNSHUFFLE)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(lr (B, 3, p, p), hr (B, 3, s*p, s*p), s)`` in [0, 1]."""
        scale = self.rng.choices(list(SCALE_WEIGHTS), weights=list(SCALE_WEIGHTS.values()))[0]
        hr_size = self.lr_patch(scale) * scale
        crops = []
        for _ in range(size):
            img = self.rng.choice(self.images)
            y = self.rng.randrange(img.shape[1] - hr_size + 1)
            x = self.rng.randrange(img.shape[2] - hr_size + 1)
            crop = img[:, y : y + hr_size, x : x + hr_size]
            if self.rng.random() < 0.5:
                crop = crop.flip(-1)
            crops.append(torch.rot90(crop, self.rng.randrange(4), dims=(-2, -1)))
        hr = torch.stack(crops).float()
        lr = F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
        return lr.round().clamp(0, 255) / 255, hr / 255, scale


class Checkpoint:
    """Resumable training state as safetensors (tensors) plus JSON (counters); no pickle."""

    def __init__(self, folder: Path, stage: str) -> None:
        self.tensors = folder / f"{stage}.safetensors"
        self.state = folder / f"{stage}.json"

    def save(self, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, state: dict) -> None:
        tensors = {f"{name}.{k}": v.detach().cpu().contiguous()
                   for name, m in modules.items() for k, v in m.state_dict().items()}
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
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
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
) -> nn.Module:
    """Generic loop: returns the EMA copy of ``model`` after training."""
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    ckpt = Checkpoint(Path(args.checkpoint_dir), name)
    state = ckpt.load({"model": model, "ema": ema}, optimizer) or {"step": 0, "elapsed": 0.0}
    if state["step"]:
        print(f"[{name}] resumed at step {state['step']}", flush=True)
    start = time.monotonic() - state["elapsed"]
    running = 0.0
    while True:
        elapsed = time.monotonic() - start
        progress = max(state["step"] / iters, elapsed / (minutes * 60))
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(progress, args.lr)
        lr, hr, scale = sampler.batch(args.batch)
        loss = loss_fn(model, lr, hr, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        update_ema(ema, model, args.ema if state["step"] > 100 else 0.0)
        state["step"] += 1
        running = 0.98 * running + 0.02 * loss.item() if state["step"] > 1 else loss.item()
        if state["step"] % args.log_every == 0:
            print(f"[{name}] step {state['step']} loss {running:.5f} lr {lr_at(progress, args.lr):.2e} "
                  f"{elapsed / 60:.1f} min", flush=True)
        if state["step"] % args.checkpoint_every == 0:
            state["elapsed"] = time.monotonic() - start
            ckpt.save({"model": model, "ema": ema}, optimizer, state)
    state["elapsed"] = time.monotonic() - start
    ckpt.save({"model": model, "ema": ema}, optimizer, state)
    print(f"[{name}] done: {state['step']} steps in {state['elapsed'] / 60:.1f} min", flush=True)
    return ema


def operator_loss(model: nn.Module, lr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.l1_loss(model(lr, scale), hr)


def make_denoiser_loss(operator: nn.Module, residual_scale: float):
    def loss(model: nn.Module, lr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
        with torch.no_grad():
            sr = operator(lr, scale)
        x0 = F.pixel_unshuffle(hr - sr, UNSHUFFLE) / residual_scale
        cond = F.pixel_unshuffle(sr.clamp(0, 1), UNSHUFFLE)
        t = torch.rand(lr.shape[0], device=lr.device) * T_MAX
        x_t, v_target = add_noise(x0, torch.randn_like(x0), t)
        return F.mse_loss(model(x_t, cond, t, scale), v_target)

    return loss


@torch.no_grad()
def estimate_residual_scale(operator: nn.Module, sampler: PatchSampler, batches: int = 8) -> float:
    stds = [(hr - operator(lr, s)).std().item() for lr, hr, s in (sampler.batch(16) for _ in range(batches))]
    return round(float(np.mean(stds)), 4)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder of HR training images")
    p.add_argument("--per-folder", type=int, default=0, help="use only the first N images of each sub-folder")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="exported .safetensors path")
    p.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"))
    p.add_argument("--operator-iters", type=int, default=20000)
    p.add_argument("--operator-minutes", type=float, default=240.0)
    p.add_argument("--denoiser-iters", type=int, default=8000)
    p.add_argument("--denoiser-minutes", type=float, default=60.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--init", type=Path, help="fine-tune from these exported weights instead of a fresh start")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=200)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if args.init:
        init = load_weights(args.init, device)
        operator, denoiser, config = init.operator.requires_grad_(True), init.denoiser.requires_grad_(True), init.config
    else:
        config = ModelConfig(operator={"channels": 48, "blocks": 6, "modes": 12}, denoiser={"channels": 48, "blocks": 3})
        operator, denoiser = build_networks(config)
    sampler = PatchSampler(args.data, device, args.seed, args.per_folder)
    print(f"training on {len(sampler.images)} images, device {device}", flush=True)
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
    training = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    digest = save_weights(args.out, operator, denoiser, config, args.version,
                          extra={"training": training})
    print(f"wrote {args.out} sha256 {digest}", flush=True)


if __name__ == "__main__":
    main()
