"""Fleet soak: two replicas sharing Postgres and S3 under mixed traffic, one SIGKILLed and restarted on a schedule.

    python -m benchmarks fleet_soak                                       # 3600 s, a kill every 600 s
    python -m benchmarks fleet_soak --duration 240 --kill-every 80 --json docs/fleet_soak_short.json

Starts a private Postgres (Debian's package) and S3 API server (moto's, from the test extras) and two
`bentoml serve` replicas with separate JOBS_DIRs and BentoML homes, as separate machines would have
(the model from the BentoML store: run `scripts/serve` or `python -m hndsr_service.model_store` once
first). Clients send, to whichever replica is up: synchronous upscales, scene jobs (some deleted while they
run), and bad input (a corrupt image, an unknown job field, an unknown job id). Every --kill-every seconds
the clients pause, each replica's memory is read at rest, and the replicas take turns being SIGKILLed and
started again. At the end every accepted job is followed to its end.

Prints (and writes with --json): statuses per kind of request; every accepted job's final status (they must
be succeeded, or cancelled when the client deleted them: none stuck, none lost, none failed); how many jobs
were resumed by another replica; each replica's memory at rest per pause; and, for the last life of each
replica, its ``hndsr_requests_total`` beside the client's counts. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rasterio.io import MemoryFile

from hndsr_service.local_fleet import BUCKET, running_postgres, running_s3_server
from hndsr_service.local_server import free_port, kill_tree, launch, rss_bytes, stop, wait_ready, worker_pid

from .scrape import requests_by_status

ROOT = Path(__file__).resolve().parents[1]
ENV = {"DEVICE": "cpu", "RATE_LIMIT_PER_HOUR": "1000000", "REQUEST_TIMEOUT_S": "120", "TILE_SIZE": "64",
       "TILE_OVERLAP": "16", "JOB_LEASE_S": "10", "MAX_QUEUED_JOBS": "12", "JOBS_STORAGE_URL": f"s3://{BUCKET}/soak"}
DESIGNED = {  # statuses each kind of request may get, by design
    # A full queue refuses a submission before its body is read, bad or not.
    "upscale": {200, 503}, "submit": {202, 503}, "corrupt": {422}, "bad_field": {422, 503}, "unknown_job": {404},
    "delete": {200, 202, 410},
}
FINAL_OK = {"succeeded", "cancelled"}
ROUTES = ("/upscale", "/jobs", "/jobs/{id}")  # the metric's endpoint labels of what the clients send


@dataclass
class Replica:
    name: str
    folder: Path
    env: dict[str, str]
    life: int = 0
    url: str = ""
    process: subprocess.Popen | None = None
    counts: Counter = field(default_factory=Counter)  # the client's statuses in this life, for the metrics

    def start(self) -> None:
        port = free_port()
        self.life += 1
        self.counts = Counter()
        self.url = f"http://127.0.0.1:{port}"
        self.process = launch(port, self.env, self.folder / "server.log", "--timeout-graceful-shutdown", "30",
                              append=True)
        wait_ready(self.url, self.process, 240, self.folder / "server.log")

    def kill(self) -> None:
        kill_tree(self.process)

    def rest_rss_mb(self) -> float | None:
        worker = worker_pid(self.process.pid)
        rss = rss_bytes(worker) if worker else None
        return None if rss is None else round(rss / 2**20, 1)


def png(rng: np.random.Generator, size: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def scene(rng: np.random.Generator, height: int = 384, width: int = 256) -> bytes:
    """A uint16 GeoTIFF of several tile rows: a job of some seconds on a CPU, long enough to be interrupted."""
    data = (np.add.outer(np.arange(height), np.arange(width)) * 20
            + rng.integers(0, 300, (height, width))).astype(np.uint16)
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=width, height=height, count=1, dtype="uint16") as dst:
            dst.write(data, 1)
        return mem.read()


class Traffic:
    def __init__(self, replicas: list[Replica], seed: int) -> None:
        self.replicas = replicas
        self.rng = random.Random(seed)
        images = np.random.default_rng(seed)
        self.images = [png(images, size) for size in (48, 64, 96)]
        self.scenes = [scene(images) for _ in range(3)]
        self.statuses: dict[str, Counter] = {kind: Counter() for kind in DESIGNED}
        self.undesigned: list[str] = []
        self.lost_to_kill = 0  # requests whose replica was killed under them (transport errors)
        self.jobs: dict[str, bool] = {}  # accepted job id -> deleted by the client
        self.up = asyncio.Event()
        self.up.set()
        self.down: set[str] = set()

    def live(self) -> Replica:
        return self.rng.choice([r for r in self.replicas if r.name not in self.down])

    async def client(self, deadline: float) -> None:
        kinds = ["upscale"] * 5 + ["submit"] * 2 + ["corrupt", "bad_field", "unknown_job", "delete"]
        async with httpx.AsyncClient(timeout=180) as http:
            while time.monotonic() < deadline:
                await self.up.wait()
                kind = self.rng.choice(kinds)
                replica = self.live()
                try:
                    response = await self.send(http, replica, kind)
                except httpx.TransportError as exc:
                    if replica.name in self.down:
                        self.lost_to_kill += 1
                    else:
                        self.undesigned.append(f"{kind} on {replica.name}: {type(exc).__name__}")
                    continue
                if response is None:
                    continue
                self.statuses[kind][response.status_code] += 1
                if replica.name not in self.down:
                    replica.counts[response.status_code] += 1
                if response.status_code not in DESIGNED[kind]:
                    self.undesigned.append(f"{kind} on {replica.name}: {response.status_code} {response.text[:200]}")

    async def send(self, http: httpx.AsyncClient, replica: Replica, kind: str) -> httpx.Response | None:
        url = replica.url
        if kind == "upscale":
            return await http.post(f"{url}/upscale", files={"image": ("a.png", self.rng.choice(self.images),
                                                                      "image/png")}, data={"scale_factor": "2"})
        if kind == "submit":
            response = await http.post(f"{url}/jobs", files={"image": ("s.tif", self.rng.choice(self.scenes),
                                                                       "image/tiff")},
                                       data={"scale_factor": "2", "ddim_steps": "1", "seed": "5"})
            if response.status_code == 202:
                self.jobs[response.json()["job_id"]] = False
            return response
        if kind == "corrupt":
            return await http.post(f"{url}/upscale", files={"image": ("a.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")})
        if kind == "bad_field":
            return await http.post(f"{url}/jobs", files={"image": ("s.tif", self.scenes[0], "image/tiff")},
                                   data={"colour": "blue"})
        if kind == "unknown_job":
            return await http.get(f"{url}/jobs/{self.rng.getrandbits(128):032x}")
        undeleted = [job for job, deleted in self.jobs.items() if not deleted]
        if not undeleted or self.rng.random() > 0.1:  # deletes a share of the jobs, at whatever stage they are
            return None
        job = self.rng.choice(undeleted)
        self.jobs[job] = True
        return await http.delete(f"{url}/jobs/{job}")


async def run(args: argparse.Namespace, replicas: list[Replica]) -> dict:
    traffic = Traffic(replicas, args.seed)
    deadline = time.monotonic() + args.duration
    clients = [asyncio.ensure_future(traffic.client(deadline)) for _ in range(args.clients)]
    memory: list[dict] = []
    kills = 0
    while time.monotonic() + args.kill_every <= deadline + 1:
        await asyncio.sleep(args.kill_every - args.rest_s - args.refill_s)
        traffic.up.clear()  # pause: in-flight requests finish, then memory at rest
        await asyncio.sleep(args.rest_s)
        memory.append({"at_s": round(args.duration - (deadline - time.monotonic())),
                       **{r.name: r.rest_rss_mb() for r in replicas}})
        traffic.up.set()
        await asyncio.sleep(args.refill_s)  # the pause drained the queue: the kill must find jobs running
        victim = replicas[kills % len(replicas)]
        traffic.down.add(victim.name)
        await asyncio.to_thread(victim.kill)
        kills += 1
        print(f"[{memory[-1]['at_s']} s] rest RSS {memory[-1]}; killed {victim.name}", flush=True)
        await asyncio.to_thread(victim.start)
        traffic.down.discard(victim.name)
    await asyncio.gather(*clients)
    served = {r.name: await asyncio.to_thread(requests_by_status, r.url, ROUTES) for r in replicas}
    outcomes = await asyncio.to_thread(follow_jobs, traffic, replicas, args.settle_s)
    return report(traffic, replicas, memory, kills, outcomes, served)



def follow_jobs(traffic: Traffic, replicas: list[Replica], settle_s: float) -> dict[str, dict]:
    """Every accepted job's last record, once all have ended (or ``settle_s`` has passed)."""
    deadline = time.monotonic() + settle_s
    last: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for job_id in traffic.jobs:
            if last.get(job_id, {}).get("status") in ("succeeded", "failed", "cancelled", "gone"):
                continue
            response = httpx.get(f"{replicas[0].url}/jobs/{job_id}", timeout=30)
            last[job_id] = response.json() if response.status_code == 200 else {"status": "gone", "code": response.status_code}
        if all(record["status"] not in ("queued", "running") for record in last.values()):
            break
        time.sleep(2)
    return last


def report(traffic: Traffic, replicas: list[Replica], memory: list[dict], kills: int, jobs: dict[str, dict],
           served: dict[str, Counter]) -> dict:
    final = Counter()
    failures = list(traffic.undesigned)
    for job_id, record in jobs.items():
        deleted = traffic.jobs[job_id]
        # A deleted job answers 410; one that was not must end succeeded.
        outcome = "deleted" if deleted and record["status"] == "gone" and record.get("code") == 410 else record["status"]
        final[outcome] += 1
        if not deleted and outcome != "succeeded":
            failures.append(f"job {job_id} ended {outcome}: {record.get('error')}")
        if deleted and outcome not in ("deleted", *FINAL_OK):
            failures.append(f"deleted job {job_id} ended {outcome}")
    attempts = Counter(record["attempts"] for record in jobs.values() if "attempts" in record)
    metrics = {}
    for replica in replicas:  # each replica's last life: its counters start with it
        server, client = dict(sorted(served[replica.name].items())), dict(sorted(replica.counts.items()))
        metrics[replica.name] = {"life": replica.life, "server": server, "client": client}
        if server != client:
            failures.append(f"{replica.name}: /metrics {server} but the client counted {client}")
    return {"statuses": {k: dict(sorted(v.items())) for k, v in traffic.statuses.items()},
            "jobs": {"accepted": len(jobs), "final": dict(final),
                     "attempts_of_jobs_not_deleted": dict(sorted(attempts.items()))},
            "kills": kills, "lost_to_kill": traffic.lost_to_kill, "memory_at_rest_mb": memory, "metrics": metrics,
            "failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3600)
    parser.add_argument("--kill-every", type=float, default=600)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rest-s", type=float, default=8.0, help="pause before each kill: memory at rest")
    parser.add_argument("--refill-s", type=float, default=6.0, help="traffic between the pause and the kill")
    parser.add_argument("--settle-s", type=float, default=600, help="how long to follow jobs after the traffic")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the replicas, Postgres and the S3 server are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    work = Path(tempfile.mkdtemp(prefix="hndsr-fleet-soak-"))
    with running_postgres() as database, running_s3_server(work / "s3.log") as storage:
        replicas = []
        for name in ("a", "b"):
            folder = work / name
            shutil.copytree(home, folder / "bentoml", ignore=shutil.ignore_patterns("prometheus_multiproc*"))
            env = {**ENV, **storage.env, "JOBS_DATABASE_URL": database.url, "REPLICA_ID": name,
                   "JOBS_DIR": str(folder / "jobs"), "BENTOML_HOME": str(folder / "bentoml")}
            replicas.append(Replica(name, folder, env))
        try:
            for replica in replicas:
                replica.start()
            result = asyncio.run(run(args, replicas))
        finally:
            for replica in replicas:
                if replica.process is not None:
                    stop(replica.process, timeout_s=40)
    result["setup"] = {"duration_s": args.duration, "kill_every_s": args.kill_every, "clients": args.clients,
                       "cpus": os.cpu_count(), "load_at_end": os.getloadavg()}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if result["failures"] else 0)

