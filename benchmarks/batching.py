"""In process, the micro-batcher (``BATCH_WAIT_MS``) against none, 1 and 4 threads, round-robin.

    python -m benchmarks batching [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics

from hndsr_model.pipeline import HNDSRPipeline

from .common import SCALE, Load, load_average, model_parser, test_image, upscale_load
from .common import service_png as png


def batching(args: argparse.Namespace) -> None:
    base = HNDSRPipeline.from_pretrained(args.weights, device=args.device)
    wait_ms = 5.0
    variants = {"no micro-batcher": HNDSRPipeline(base.model, base.device, batch_wait_ms=0),
                f"micro-batcher {wait_ms:g} ms": HNDSRPipeline(base.model, base.device, batch_wait_ms=wait_ms)}
    image = test_image(256)
    print(f"micro-batching, 256x256 x{SCALE} upscale+PNG in process, {args.device}, tile_batch {base.tile_batch}, "
          f"{args.repeats} rounds round-robin; {load_average()}")
    results: dict[str, dict[int, list[Load]]] = {name: {1: [], 4: []} for name in variants}
    for _ in range(args.repeats):
        for threads in (1, 4):
            for name, pipeline in variants.items():
                results[name][threads].append(upscale_load(pipeline, image, threads, 4 * threads, png))
    for threads in (1, 4):
        for name, loads in results.items():
            rate = statistics.median(load.per_second for load in loads[threads])
            p50 = statistics.median(load.p50_ms for load in loads[threads])
            print(f"  {threads} thread(s), {name:22s} {rate:6.2f} req/s   p50 {p50:7.1f} ms")
    print(load_average())


def main(argv: list[str] | None = None) -> int:
    parser = model_parser("batching", __doc__)
    batching(parser.parse_args(argv))
    return 0
