"""``hndsr batch`` in process and on a local Ray cluster, over the same inputs: wall time, scenes per hour, output
megapixels per second, Ray's overhead and where the time goes (each stage's seconds from ``batch.json``).

    python -m benchmarks batch                      # the shared public GeoTIFFs at x4, 2 rounds, 2 worker nodes
    python -m benchmarks batch --copies 4 --rounds 1 --json docs/batch_ray_archive.json   # 24 scenes

``--copies K`` makes an archive of K links to each input under distinct names, so that the fixed costs (Ray's
start-up, each actor's model and sessions) are spread over more scenes, as in a real archive.

Each round runs the in-process batch, then the Ray batch, each as the ``hndsr batch`` command a user types, into
a fresh folder (no skipping). The Ray cluster (a head with no CPUs and ``--workers`` nodes of 2 CPUs each) is
started once, before the rounds; its start is timed apart. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import load_average
from hndsr_batch.local_ray import local_ray_cluster

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "geotiff"
INPUTS = ["public/image_rgb.tif", "public/image_nodata.tif", "public/image_rgba_nodata.tif", "spacenet_ms1_4band_float64.tif",
          "spacenet_pan1_uint16.tif", "scene_1_Sentinel-2.tif"]
HNDSR = str(Path(sys.executable).with_name("hndsr"))


def run(inputs: list[str], output: Path, scale: int, ray: str | None) -> dict[str, float]:
    command = [HNDSR, "batch", *inputs, "--output", str(output), "--scale", str(scale)]
    started = time.perf_counter()
    done = subprocess.run(command + (["--ray", ray] if ray else []), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    scenes = json.loads((output / "batch.json").read_text())["scenes"]
    pixels = sum(s["input"]["width"] * s["input"]["height"] * scale * scale for s in scenes)
    stages = {stage: sum(s["seconds"][stage] for s in scenes) for stage in ("plan", "upscale", "commit")}
    return {"wall_s": wall, "scenes_per_hour": len(scenes) * 3600 / wall, "output_mpx_per_s": pixels / 1e6 / wall,
            **{f"{stage}_s": seconds for stage, seconds in stages.items()}}


def archive(folder: Path, copies: int) -> list[str]:
    """``copies`` links to each input, named apart (outputs are named after their inputs)."""
    folder.mkdir()
    links = []
    for copy in range(copies):
        for name in INPUTS:
            link = folder / f"{Path(name).stem}_{copy}.tif"
            link.symlink_to(DATA / name)
            links.append(str(link))
    return links


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="Ray worker nodes (2 CPUs each)")
    parser.add_argument("--copies", type=int, default=1, help="links to each input in the archive")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hndsr-bench-batch-") as scratch:
        folder = Path(scratch)
        inputs = archive(folder / "archive", args.copies)
        started = time.perf_counter()
        with local_ray_cluster(folder, workers=args.workers) as cluster:
            cluster_start = time.perf_counter() - started
            here, on_ray = [], []
            for n in range(args.rounds):
                here.append(run(inputs, folder / f"local{n}", args.scale, None))
                on_ray.append(run(inputs, folder / f"ray{n}", args.scale, cluster.address))
                print(f"round {n + 1}: in process {here[-1]['wall_s']:.1f} s, Ray {on_ray[-1]['wall_s']:.1f} s",
                      flush=True)
    local, ray = median_of(here), median_of(on_ray)
    print(f"\n{len(inputs)} inputs at x{args.scale}, medians of {args.rounds} rounds; {load_average()}; "
          f"Ray cluster ({args.workers} worker nodes) started in {cluster_start:.1f} s\n")
    print(f"{'':24}{'in process':>12}{'Ray':>12}")
    for key, label in (("wall_s", "wall time, s"), ("scenes_per_hour", "scenes per hour"),
                       ("output_mpx_per_s", "output Mpx per s"), ("plan_s", "planning, s (sum)"),
                       ("upscale_s", "model stage, s (sum)"), ("commit_s", "items, s (sum)")):
        print(f"{label:24}{local[key]:12.2f}{ray[key]:12.2f}")
    overhead = ray["wall_s"] / local["wall_s"] - 1
    print(f"\nRay's wall time over in process: {overhead * 100:+.1f} %")
    if args.json:
        args.json.write_text(json.dumps({"inputs": INPUTS, "copies": args.copies, "scale": args.scale,
                                         "rounds": args.rounds,
                                         "workers": args.workers, "cluster_start_s": cluster_start,
                                         "in_process": local, "ray": ray, "ray_overhead": overhead,
                                         "load_average": load_average()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
