"""A dispatch-bound forward (the operator on an 8x8 input) beside a thread running Python, per interpreter
switch interval: how PyTorch's per-operator GIL hand-offs slow it.

    python -m benchmarks gil [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import torch

from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.timing import median_seconds

from .common import load_average, model_parser

GIL_SWITCH_INTERVALS_S = (0.005, 0.001, 0.0002)  # Python's default first


def gil(args: argparse.Namespace) -> None:
    """The operator on an 8x8 input, where PyTorch's per-operator dispatch is the cost (as kernel launches are
    on a GPU): alone, and beside a thread running pure Python half the time (2 ms bursts, as an event loop
    parsing requests), for several interpreter switch intervals. PyTorch lets go of the GIL around every
    operator and must take it back after each (docs/throughput.md, "Where the time goes")."""
    pipeline = HNDSRPipeline.from_pretrained(args.weights, device="cpu")
    operator = pipeline.model.operator
    tile = torch.rand(1, 3, 8, 8)

    def forward() -> None:
        with torch.inference_mode():
            operator.decode(tile, operator.forward_features(tile, 2), 2)

    def python_bursts(stop: threading.Event) -> None:
        while not stop.is_set():
            end = time.perf_counter() + 0.002
            while time.perf_counter() < end:
                pass
            time.sleep(0.002)

    def median_ms() -> float:
        return median_seconds(forward, max(20, args.repeats)) * 1000

    print(f"GIL contention, the operator on an 8x8 input (dispatch-bound), cpu; {load_average()}", flush=True)
    default = sys.getswitchinterval()
    try:
        for interval in GIL_SWITCH_INTERVALS_S:
            sys.setswitchinterval(interval)
            alone = median_ms()
            stop = threading.Event()
            bursts = threading.Thread(target=python_bursts, args=(stop,))
            bursts.start()
            try:
                shared = median_ms()
            finally:
                stop.set()
                bursts.join()
            print(f"  switch interval {interval * 1000:4.1f} ms: alone {alone:6.2f} ms, beside Python half the "
                  f"time {shared:6.2f} ms ({shared / alone:.1f}x)", flush=True)
    finally:
        sys.setswitchinterval(default)
    print(load_average())


def main(argv: list[str] | None = None) -> int:
    parser = model_parser("gil", __doc__)
    gil(parser.parse_args(argv))
    return 0
