"""``OMP_WAIT_POLICY`` unset/ACTIVE/PASSIVE, each in a fresh process: ``upscale`` on the main thread, on a worker
thread and on four at once (as the server's slots run it), quiet and with one core kept busy by another process.

    python -m benchmarks omp [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline

from .common import SCALE, load_average, model_parser, test_image

OMP_CALLS = ("main thread", "worker thread", "4 worker threads")
OMP_POLICIES = ("unset", "ACTIVE", "PASSIVE")


def omp(args: argparse.Namespace) -> None:
    """One process per policy (libgomp reads it when it loads), all loaded at once and asked in turn, call by
    call, so that the shared machine's load falls on every policy alike."""
    children = {policy: omp_process(policy, args.device) for policy in OMP_POLICIES}
    times: dict[tuple[str, str, str], list[float]] = {}
    print(f"OMP_WAIT_POLICY, 256x256 x{SCALE} upscale, {args.device}, {args.repeats} rounds; {load_average()}",
          flush=True)
    try:
        for contention in ("quiet", "busy core"):
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if contention != "quiet" else None
            try:
                for _ in range(args.repeats):
                    for call in OMP_CALLS:
                        for policy, child in children.items():
                            assert child.stdin and child.stdout
                            child.stdin.write(call + "\n")
                            child.stdin.flush()
                            times.setdefault((call, contention, policy), []).append(float(child.stdout.readline()))
            finally:
                if spinner:
                    spinner.kill()
                    spinner.wait()
    finally:
        for child in children.values():
            child.kill()
            child.wait()
    print("  median ms per upscale (4 worker threads: wall time / 4, the four at once as the server's slots run)")
    print(f"  {'':30s}" + "".join(f"{policy:>10s}" for policy in OMP_POLICIES))
    for contention in ("quiet", "busy core"):
        for call in OMP_CALLS:
            print(f"  {call + ', ' + contention:30s}" + "".join(
                f"{statistics.median(times[call, contention, policy]) * 1000:10.0f}" for policy in OMP_POLICIES))
    print(load_average())


def omp_process(policy: str, device: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    child = subprocess.Popen([sys.executable, "-m", "benchmarks", "omp", "--child", "--device", device], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout and child.stdout.readline().strip() == "ready"
    return child


def omp_child(device: str) -> None:
    """Answer each call name on stdin with the seconds per upscale it took."""
    pipeline = HNDSRPipeline.from_pretrained(device=device)
    image = test_image(256)
    workers = ThreadPoolExecutor(4)
    calls = {
        "main thread": lambda: pipeline.upscale(image, UpscaleOptions(SCALE)),
        "worker thread": lambda: workers.submit(pipeline.upscale, image, UpscaleOptions(SCALE)).result(),
        "4 worker threads": lambda: [f.result() for f in [workers.submit(pipeline.upscale, image, UpscaleOptions(SCALE))
                                                          for _ in range(4)]],
    }
    per_call = {"main thread": 1, "worker thread": 1, "4 worker threads": 4}
    for call in calls.values():
        call()  # warm-up: every thread's OpenMP team exists
    print("ready", flush=True)
    for line in sys.stdin:
        started = time.perf_counter()
        calls[line.strip()]()
        print((time.perf_counter() - started) / per_call[line.strip()], flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = model_parser("omp", __doc__)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one policy's process
    run(parser.parse_args(argv))
    return 0


def run(args: argparse.Namespace) -> None:
    if args.child:
        omp_child(args.device)
    else:
        omp(args)
