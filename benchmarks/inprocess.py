"""The model and the pipeline in process, without the server: the figures a GPU machine can give with torch,
NumPy and Pillow alone (``benchmarks.serving`` sets the same runs beside the real server's).

    python -m benchmarks inprocess --device cuda [--repeats 20] [--threads 1 4 16 32] [--scene-size 8192]

Prints the operator alone (one 256x256 tile, batches of 8/16/32 tiles, fp32 and bf16 autocast),
``upscale`` of a 256x256 image at x4 called from 1..32 threads (requests/s, p50, p99), with and without
Pillow's PNG encoding at level 1, and a big scene at x2 (output megapixels/s), with the load average.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import torch

from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.weights import DEFAULT_WEIGHTS

from .common import big_scene, load_average, model_only, pillow_png, test_image, upscale_load

SCALE = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks inprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--scene-size", type=int, default=8192)
    args = parser.parse_args(argv)
    pipeline = HNDSRPipeline.from_pretrained(DEFAULT_WEIGHTS, device=args.device)
    device = pipeline.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"in process, {name}, model {pipeline.version}, tile_batch {pipeline.tile_batch}; {load_average()}",
          flush=True)
    report: dict[str, object] = {"device": name, "model_only": {}, "upscale": {}}
    for batch in args.batches:
        for bf16 in (False, True):
            figures = model_only(pipeline, args.repeats, batch, bf16)
            label = f"batch {batch} {'bf16' if bf16 else 'fp32'}"
            report["model_only"][label] = figures  # type: ignore[index]
            print(f"model only, {label}: one tile {figures['tile_ms']:.2f} ms, {figures['batch_tiles_per_s']:.0f} "
                  "tiles/s", flush=True)
    image = test_image(256)
    for encode in (None, pillow_png):
        for threads in args.threads:
            stats = upscale_load(pipeline, image, threads, max(2 * args.repeats, 4 * threads), encode)
            label = f"upscale{' + PNG' if encode else ''}, {threads} threads"
            report["upscale"][label] = asdict(stats)  # type: ignore[index]
            print(stats.row(label), flush=True)
    if args.scene_size:
        scene = big_scene(pipeline, args.scene_size)
        report["big_scene"] = scene
        print(f"big scene {args.scene_size}x{args.scene_size} x2: {scene['seconds']:.2f} s, "
              f"{scene['output_mpx_per_s']:.1f} output megapixels/s; {load_average()}", flush=True)
    print(json.dumps(report))
    return 0
