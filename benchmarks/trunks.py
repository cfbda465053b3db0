"""Operator trunks at equal training compute: each variant trained from scratch for the same minutes, seeds apart.

``python -m benchmarks trunks --data ../shared/data/rsscn7/train --val ../shared/data/rsscn7/val --minutes 8
--seeds 0 1 2 --json docs/trunks_cpu.json``

Every variant (2.1.0's network ``v2``, the SPAN-style ``v3`` and ``v3`` without spectral mixing) trains its operator
with ``hndsr_model.train``'s loop and settings (L1, every scale 2-8, Adam, cosine schedule, EMA) for ``--minutes``:
on the CPU minutes of CPU time the process spends (all its threads; what else runs on the machine does not count),
on a GPU minutes of wall time. A faster network takes more steps in the same compute, which is the point. Each EMA
network is then scored with the protocol (``shared/data/README.md``: Pillow bicubic LR, uint8, Y-PSNR with an s-pixel border)
on every ``--every``-th ``--val`` image at ``--scales``, whole images in one piece, and all are timed round-robin for
one 256x256 x4 tile (re-parameterised layers collapsed, as served). Prints one table: mean and spread over seeds.
On a GPU (``--device cuda --minutes 60``) the same command is the comparison at the compute the issue asks for.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hndsr_model.data import bicubic_upscale, list_images, load_rgb, make_pair
from hndsr_model.operator import NeuralOperatorSR
from hndsr_model.pipeline import resolve_device, to_uint8
from hndsr_model.quality import y_psnr
from hndsr_model.timing import round_robin_seconds
from hndsr_model.train import PatchSampler, arch_operator, operator_loss, train_stage
from hndsr_model.weights import OPERATORS

from .common import load_average, synchronize

VARIANTS = {  # name: (arch, spectral mixing)
    "v2 (2.1.0's network)": ("v2", True),
    "v3 (SPAN blocks)": ("v3", True),
    "v3 without spectral mixing": ("v3", False),
}


class CountedLoss:
    """train.py's operator loss, counting the steps it was taken for."""

    def __init__(self) -> None:
        self.steps = 0

    def __call__(self, model: NeuralOperatorSR, lr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
        self.steps += 1
        return operator_loss(model, lr, hr, scale)


def fresh(arch: str, spectral: bool, seed: int) -> NeuralOperatorSR:
    torch.manual_seed(seed)
    return OPERATORS[arch](**arch_operator(arch, spectral))


def training_args(args: argparse.Namespace, folder: str) -> argparse.Namespace:
    """What :func:`train_stage` reads, at ``hndsr_model.train``'s defaults."""
    return argparse.Namespace(lr=4e-4, batch=args.batch, lr_reference_batch=args.lr_reference_batch, ema=0.999,
                              compile=False, bf16=False, channels_last=False, checkpoint_dir=folder, log_every=200,
                              checkpoint_every=10**9)


@torch.inference_mode()
def val_psnr(operator: NeuralOperatorSR, images: list[np.ndarray], scale: int, device: torch.device) -> float:
    scores = []
    for image in images:
        hr, lr = make_pair(image, scale)
        x = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].to(device).float().div_(255)
        sr = to_uint8(operator(x, scale)[0]).permute(1, 2, 0).cpu().numpy()
        scores.append(y_psnr(sr, hr, scale))
    return float(np.mean(scores))


def bicubic_psnr(images: list[np.ndarray], scale: int) -> float:
    scores = []
    for image in images:
        hr, lr = make_pair(image, scale)
        scores.append(y_psnr(bicubic_upscale(lr, scale), hr, scale))
    return float(np.mean(scores))


def timed_call(operator: NeuralOperatorSR, tile: torch.Tensor, device: torch.device) -> None:
    operator(tile, 4)
    synchronize(device)  # a GPU's work is done when the call returns


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks trunks", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="training images (rsscn7/train)")
    p.add_argument("--val", type=Path, required=True, help="evaluation images (rsscn7/val)")
    p.add_argument("--minutes", type=float, default=8.0,
                   help="training compute per variant and seed: CPU minutes on the CPU, wall minutes on a GPU")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--every", type=int, default=10, help="score every Nth val image")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr-reference-batch", type=int, default=0,
                   help="scale the learning rate (4e-4) from this batch to --batch, as train.py does (0: no scaling)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    images = [load_rgb(path) for path in list_images(args.val)[:: args.every]]
    clock = time.process_time if device.type == "cpu" else time.monotonic
    report: dict = {"minutes": args.minutes, "clock": clock.__name__, "seeds": args.seeds, "device": str(device),
                    "batch": args.batch, "val_images": len(images), "load_before": load_average(), "runs": {}}
    report["bicubic"] = {str(s): bicubic_psnr(images, s) for s in args.scales}
    trained: dict[str, NeuralOperatorSR] = {}
    sampler = PatchSampler(args.data, device, args.seeds[0])  # decoded once; every run reseeds its stream
    for name in args.variants:
        arch, spectral = VARIANTS[name]
        for seed in args.seeds:
            sampler.reseed(seed)  # the same seed, the same batches, whichever the network
            loss = CountedLoss()
            with tempfile.TemporaryDirectory() as folder:
                operator = train_stage(f"{name} seed {seed}", fresh(arch, spectral, seed).to(device).train(),
                                       loss, sampler, training_args(args, folder), 10**9, args.minutes, clock)
            operator.eval().requires_grad_(False).collapse()
            scores = {str(s): round(val_psnr(operator, images, s, device), 4) for s in args.scales}
            report["runs"].setdefault(name, []).append({"seed": seed, "steps": loss.steps, "psnr": scores,
                                                        "load": load_average()})
            print(f"{name} seed {seed}: " + ", ".join(f"x{s} {v:.3f} dB" for s, v in scores.items()), flush=True)
            trained[name] = operator
    tile = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        calls = {name: functools.partial(timed_call, op, tile, device) for name, op in trained.items()}
        report["x4_tile_seconds"] = {k: round(v, 4) for k, v in round_robin_seconds(calls, 7).items()}
    report["load_after"] = load_average()
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def table(report: dict) -> str:
    scales = list(report["bicubic"])
    lines = ["| variant | params | " + " | ".join(f"x{s} dB vs bicubic (mean ± sd)" for s in scales)
             + " | x4 256² tile (s) |", "|---" * (len(scales) + 3) + "|"]
    for name, runs in report["runs"].items():
        cells = []
        for s in scales:
            gains = [run["psnr"][s] - report["bicubic"][s] for run in runs]
            spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
            cells.append(f"{statistics.mean(gains):+.3f} ± {spread:.3f}")
        arch, spectral = VARIANTS[name]
        params = sum(p.numel() for p in fresh(arch, spectral, 0).parameters())
        lines.append(f"| {name} | {params:,} | " + " | ".join(cells) + f" | {report['x4_tile_seconds'][name]:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
