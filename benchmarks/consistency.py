"""What the LR-consistency projection costs: one 256x256 image through the pipeline with and without it, per scale.

``python -m benchmarks consistency [--repeats 9]``: median wall seconds of each, timed round-robin in one run (so the
machine's load falls on both alike), and their ratio; the default engine and tiling of this machine.
"""

from __future__ import annotations

import argparse
import functools
import sys

import numpy as np

from hndsr_model.data import list_images, load_rgb
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.timing import round_robin_seconds

from .common import VAL, load_average


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks consistency", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4, 8])
    args = p.parse_args(argv)
    pipeline = HNDSRPipeline.from_pretrained(device="cpu")
    image = np.ascontiguousarray(load_rgb(list_images(VAL)[0])[:256, :256])
    print(load_average())
    for scale in args.scales:
        calls = {projected: functools.partial(pipeline.upscale, image, UpscaleOptions(scale, consistency=projected))
                 for projected in (False, True)}
        seconds = round_robin_seconds(calls, args.repeats)
        print(f"x{scale} 256x256: without {seconds[False]:.3f} s, with {seconds[True]:.3f} s, "
              f"x{seconds[True] / seconds[False]:.3f}", flush=True)
    print(load_average())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
