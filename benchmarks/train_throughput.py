"""Training throughput of each operator variant: one optimiser step, data path included.

``python -m benchmarks train_throughput --data ../shared/data/rsscn7/train --device cuda``

Each step cuts a batch of 48x48 LR / 192x192 HR crops at x4 from the device-resident training set
(:class:`hndsr_model.train.PatchSampler`), degrades it on the device and runs forward, backward and
Adam, as training does. Prints steps/s and samples/s (median of timed windows) for every variant,
batch size and precision, side by side in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hndsr_model import degradation
from hndsr_model.operator import NeuralOperatorSR
from hndsr_model.operator_v2 import NeuralOperatorSRv2
from hndsr_model.pipeline import resolve_device
from hndsr_model.train import V2_OPERATOR, PatchSampler

VARIANTS = {
    "v1": lambda: NeuralOperatorSR(),
    "v2": lambda: NeuralOperatorSRv2(**V2_OPERATOR),
    "v2 without spectral mixing": lambda: NeuralOperatorSRv2(**V2_OPERATOR, spectral=False),
}
SCALE, LR_PATCH = 4, 48


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_second(model: torch.nn.Module, sampler: PatchSampler, batch: int, bf16: bool,
                     windows: int, steps: int) -> tuple[float, int]:
    """Median steps/s and the number of parameters the step trains (unused layers left out)."""
    device = sampler.device
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step() -> None:
        hr = sampler.crops(batch, LR_PATCH * SCALE).float()
        lr = degradation.bicubic(hr, SCALE)
        with autocast():
            loss = F.l1_loss(model(lr / 255, SCALE), hr / 255)
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        optimizer.step()

    for _ in range(3):  # warm-up: cuDNN autotuning, allocator
        step()
    rates = []
    for _ in range(windows):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        rates.append(steps / (time.perf_counter() - start))
    trained = sum(p.numel() for p in model.parameters() if p.grad is not None)
    return statistics.median(rates), trained


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="training images (decoded once onto the device)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="steps per timed window")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    sampler = PatchSampler(args.data, device, seed=0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{len(sampler)} images on {name}; x{SCALE}, {LR_PATCH}x{LR_PATCH} LR patches; median of "
          f"{args.windows} windows of {args.steps} steps\n")
    print("| variant | parameters | batch | precision | steps/s | samples/s |")
    print("|---|---|---|---|---|---|")
    for variant, build in VARIANTS.items():
        for batch in args.batches:
            for bf16 in (False, True):
                torch.manual_seed(0)
                model = build().to(device).train()
                rate, params = steps_per_second(model, sampler, batch, bf16, args.windows, args.steps)
                precision = "bf16 autocast" if bf16 else "fp32 (TF32)"
                print(f"| {variant} | {params:,} | {batch} | {precision} | {rate:.1f} | {rate * batch:,.0f} |",
                      flush=True)

