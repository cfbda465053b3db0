"""What a worker keeps for each new image shape it meets: resident memory after rounds of new shapes.

Each round upscales ``--per-round`` images of new random sizes (16-200 px, x2-x4) on the CPU, then collects
garbage and trims the heap (as the worker does once idle) and prints the growth of RSS over a warm start. One
fresh process per oneDNN primitive-cache capacity (``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` is read once, at start),
then the same upscales of one repeated shape, timed (docs/load_soak.md)::

    .venv/bin/python -m benchmarks shape_memory --capacities default 64 0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from hndsr_model.options import UpscaleOptions
from hndsr_model.timing import median_seconds
from hndsr_service.inference import HeapTrimmer
from hndsr_service.local_server import rss_bytes

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20


def settled_rss_mb() -> float:
    """This process's resident memory once settled as an idle worker settles (garbage collected, heap trimmed)."""
    HeapTrimmer().settle()
    return (rss_bytes(os.getpid()) or 0) / MB


def child(rounds: int, per_round: int) -> None:
    import torch

    from hndsr_model.pipeline import HNDSRPipeline

    torch.set_num_threads(2)
    pipeline = HNDSRPipeline.from_pretrained(ROOT / "hndsr_model" / "weights" / "hndsr.safetensors", device="cpu")
    rng = np.random.default_rng(0)
    repeated = rng.integers(0, 256, (64, 64, 3), np.uint8)
    for _ in range(3):
        pipeline.upscale(repeated, UpscaleOptions(2))
    base = settled_rss_mb()
    growth = []
    for _ in range(rounds):
        for _ in range(per_round):
            height, width = rng.integers(16, 201, 2)
            pipeline.upscale(rng.integers(0, 256, (height, width, 3), np.uint8),
                             UpscaleOptions(int(rng.integers(2, 5))))
        growth.append(f"{settled_rss_mb() - base:+.1f}")
    repeated_s = median_seconds(lambda: pipeline.upscale(repeated, UpscaleOptions(2)), 15)
    capacity = os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "default")
    print(f"  capacity {capacity:>7s}: growth after each round of {per_round} new shapes (MB) {' '.join(growth)};"
          f" 64x64 x2 repeated: median {repeated_s * 1000:.1f} ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks shape_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--capacities", nargs="+", default=["default", "64", "0"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.rounds, args.per_round)
        return 0
    print(f"memory kept per new image shape, cpu; load average {os.getloadavg()[0]:.2f}", flush=True)
    for capacity in args.capacities:
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
        if capacity != "default":
            env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = capacity
        subprocess.run([sys.executable, "-m", "benchmarks", "shape_memory", "--child", "--rounds", str(args.rounds),
                        "--per-round", str(args.per_round)], env=env, check=True, cwd=ROOT)
    return 0

