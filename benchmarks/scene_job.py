"""Run one scene job on the real server and print its time, throughput and the server's peak memory.

    python -m benchmarks scene_job /tmp/scene.tif --scale 2             # 10980x10980 from make_scene.py
    python -m benchmarks scene_job /tmp/scene8k.tif --scale 4 --stop-at 0.1   # memory of a 8192^2 x4 job

Starts `bentoml serve service:HNDSR` (a private JOBS_DIR; the model from the BentoML store, so run
`scripts/serve` or `python -m hndsr_service.model_store` once first), submits the scene with the jobs
client, and samples the resident memory of the whole server process tree every 0.5 s. With
``--stop-at F`` the job is cancelled once a fraction F of its tiles is done (memory does not grow with the
scene, so a part shows the peak); the cancel's latency is printed too.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from hndsr_client import JobsClient
from hndsr_service.local_server import local_server, tree_rss_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--stop-at", type=float, default=None, help="cancel once this fraction of tiles is done")
    parser.add_argument("--output", type=Path, default=None, help="where to download the result")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hndsr-bench-") as jobs_dir, \
            local_server({"JOBS_DIR": jobs_dir}) as (url, server):
        peak = {"rss": 0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                peak["rss"] = max(peak["rss"], tree_rss_bytes(server))

        try:
            idle = tree_rss_bytes(server)
            threading.Thread(target=sample, daemon=True).start()
            with JobsClient(url, timeout_s=600) as client:
                started = time.perf_counter()
                job_id = client.submit(args.scene, scale=args.scale)
                job = run(client, job_id, args.stop_at)
                elapsed = time.perf_counter() - started
                if job["status"] == "succeeded" and args.output:
                    client.download(job_id, args.output)
            out = job["output"]
            megapixels = out["width"] * out["height"] * job["progress"]["fraction"] / 1e6
            print(f"scene {job['input']['width']}x{job['input']['height']}x{job['input']['bands']} "
                  f"{job['input']['dtype']} x{args.scale}: {job['status']} after {elapsed:.0f} s, "
                  f"tiles {job['progress']['tiles_done']}/{job['progress']['tiles_total']}, "
                  f"{megapixels / elapsed:.2f} output Mpx/s (all bands)")
            print(f"server RSS: idle {idle / 2**30:.2f} GiB, peak during the job {peak['rss'] / 2**30:.2f} GiB")
        finally:
            stop.set()


def run(client: JobsClient, job_id: str, stop_at: float | None) -> dict:
    if stop_at is None:
        return client.wait(job_id, progress=True)
    while (job := client.status(job_id))["progress"]["fraction"] < stop_at:
        time.sleep(1)
    asked = time.perf_counter()
    client.cancel(job_id)
    while (job := client.status(job_id))["status"] == "running":
        time.sleep(0.2)
    print(f"cancelled at {job['progress']['fraction']:.1%}: stopped {time.perf_counter() - asked:.1f} s after the "
          "DELETE")
    return job

