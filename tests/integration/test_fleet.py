"""Scene jobs across a fleet: two real replicas (separate JOBS_DIRs and BentoML homes, as separate machines
would have) sharing a real Postgres and a real S3 API server. Any replica answers for any job; a job whose
runner is killed, paused or restarted is resumed elsewhere from its last tile row, with identical pixels;
database and storage outages are survived."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from rasterio.io import MemoryFile

from tests.fleet import BUCKET, Postgres, S3Server, postgres, s3_server
from tests.integration.server import Server
from tests.integration.test_jobs import assert_error, crash, status, submitted, wait_for
from tests.rasters import smooth, write_raster

pytestmark = pytest.mark.integration

LEASE_S = 8  # short, so that takeovers happen within seconds here (the default is 30), not on a busy CI machine
ENV = {"RATE_LIMIT_PER_HOUR": "1000", "REQUEST_TIMEOUT_S": "300", "TILE_SIZE": "64", "TILE_OVERLAP": "16",
       "JOB_LEASE_S": str(LEASE_S), "JOBS_STORAGE_URL": f"s3://{BUCKET}/fleet"}
SEED = 11


class Fleet:
    def __init__(self, root: Path, bentoml_home: Path, database: Postgres, storage: S3Server) -> None:
        self.root, self.home, self.database, self.storage = root, bentoml_home, database, storage
        self.replicas: dict[str, Server] = {}

    def start(self, name: str) -> Server:
        """Replica ``name`` with its own scratch and BentoML home (a copy of the session's, model included)."""
        folder = self.root / name
        home = folder / "bentoml"
        if not home.exists():
            shutil.copytree(self.home, home, ignore=shutil.ignore_patterns("prometheus_multiproc*"))
        env = {**ENV, **self.storage.env, "JOBS_DATABASE_URL": self.database.url, "REPLICA_ID": name,
               "JOBS_DIR": str(folder / "jobs"), "BENTOML_HOME": str(home)}
        lives = len(list(folder.glob("server-*.log")))
        server = self.replicas[name] = Server(env, folder / f"server-{lives + 1}.log")
        server.wait_ready()
        return server

    def runner_of(self, job_id: str) -> Server:
        return self.replicas[status(next(iter(self.replicas.values())), job_id)["runner"]]

    def other_than(self, server: Server) -> Server:
        return next(s for s in self.replicas.values() if s is not server)


@pytest.fixture(scope="module")
def fleet(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    with postgres() as database, s3_server(root / "s3.log") as storage:
        fleet = Fleet(root, bentoml_home, database, storage)
        try:
            fleet.start("a")
            fleet.start("b")
            yield fleet
        finally:
            for server in fleet.replicas.values():
                server.stop()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Many tile rows (12 of 64 px at x2 with diffusion): slow enough to interrupt mid-way on any machine."""
    data = smooth(512, 320, 1, seed=8, low=200, high=6000, dtype="uint16")
    return write_raster(tmp_path_factory.mktemp("fleet_scene") / "scene.tif", data).read_bytes()


@pytest.fixture(scope="module")
def reference(fleet: Fleet, scene: bytes) -> np.ndarray:
    """The product of an uninterrupted run of the scene, for the pixels of interrupted runs to match."""
    a = fleet.replicas["a"]
    job_id = submitted(a, scene, scale_factor=2, ddim_steps=1, seed=SEED)
    wait_for(a, job_id, lambda b: b["status"] == "succeeded", timeout=600)
    return pixels(httpx.get(f"{a.url}/jobs/{job_id}/result", timeout=60).content)


def pixels(content: bytes) -> np.ndarray:
    with MemoryFile(content) as mem, mem.open() as dst:
        return dst.read()


def rows_done_at_least(rows: int) -> Any:
    return lambda body: body["status"] == "running" and body["progress"]["tiles_done"] >= rows * 7


def test_any_replica_answers_for_any_job(fleet: Fleet, scene: bytes, reference: np.ndarray) -> None:
    a, b = fleet.replicas["a"], fleet.replicas["b"]
    small = write_raster(fleet.root / "small.tif", smooth(96, 80, 1, seed=3, high=4000, dtype="uint16")).read_bytes()
    job_id = submitted(a, small, scale_factor=2)
    end = wait_for(b, job_id, lambda body: body["status"] == "succeeded")
    assert end["runner"] in ("a", "b") and end["attempts"] == 1
    whole = httpx.get(f"{b.url}/jobs/{job_id}/result", timeout=60)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    for server in (a, b):
        part = httpx.get(f"{server.url}/jobs/{job_id}/result", headers={"range": "bytes=100-199"}, timeout=60)
        assert part.status_code == 206 and part.content == whole.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    etag = whole.headers["etag"]  # the same on every replica; an If-Range naming another version gets it all
    resumed = httpx.get(f"{a.url}/jobs/{job_id}/result", headers={"range": "bytes=100-", "if-range": etag}, timeout=60)
    assert resumed.status_code == 206 and resumed.headers["etag"] == etag
    stale = httpx.get(f"{a.url}/jobs/{job_id}/result", headers={"range": "bytes=100-", "if-range": '"0"'}, timeout=60)
    assert stale.status_code == 200 and stale.content == whole.content
    tail = httpx.get(f"{a.url}/jobs/{job_id}/result", headers={"range": "bytes=-10"}, timeout=60)
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    beyond = httpx.get(f"{a.url}/jobs/{job_id}/result", headers={"range": f"bytes={len(whole.content)}-"}, timeout=60)
    assert beyond.status_code == 416
    assert pixels(whole.content).shape == (1, 192, 160)
    # Cancelled through the replica that does not run it: it stops wherever it runs, and its files go.
    slow = submitted(b, scene, scale_factor=2, ddim_steps=1, seed=SEED)
    wait_for(a, slow, rows_done_at_least(1), timeout=300)
    deletion = httpx.delete(f"{fleet.other_than(fleet.runner_of(slow)).url}/jobs/{slow}", timeout=30)
    assert deletion.status_code == 202, deletion.text
    assert_error(httpx.get(f"{a.url}/jobs/{slow}", timeout=30), 410, "job_deleted")
    assert_gone(fleet, slow)


def assert_gone(fleet: Fleet, job_id: str, timeout: float = 60) -> None:
    """No object of the job in storage and no scratch on any replica, once its runner has stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = fleet.storage.keys(f"fleet/{job_id}") + [str(p) for p in fleet.root.glob(f"*/jobs/{job_id}")]
        if not left:
            return
        time.sleep(0.5)
    pytest.fail(f"files of job {job_id} left behind: {left}")


def test_a_killed_runner_is_resumed_elsewhere_from_its_last_row(fleet: Fleet, scene: bytes,
                                                                 reference: np.ndarray) -> None:
    a = fleet.replicas["a"]
    job_id = submitted(a, scene, scale_factor=2, ddim_steps=1, seed=SEED)
    before = wait_for(a, job_id, rows_done_at_least(3), timeout=300)
    runner = fleet.replicas[before["runner"]]
    crash(runner)
    survivor = fleet.other_than(runner)
    progress: list[int] = []

    def done(body: dict[str, Any]) -> bool:
        progress.append(body["progress"]["tiles_done"])
        return body["status"] == "succeeded"

    end = wait_for(survivor, job_id, done, timeout=600)
    fleet.start(before["runner"])
    assert end["attempts"] == before["attempts"] + 1 and end["runner"] != before["runner"]
    assert min(progress) >= before["progress"]["tiles_done"] - 7, "progress went back more than a tile row"
    assert np.array_equal(pixels(httpx.get(f"{survivor.url}/jobs/{job_id}/result", timeout=60).content), reference)


def test_a_paused_runner_loses_its_lease_and_stops_writing(fleet: Fleet, scene: bytes, reference: np.ndarray) -> None:
    a = fleet.replicas["a"]
    job_id = submitted(a, scene, scale_factor=2, ddim_steps=1, seed=SEED)
    before = wait_for(a, job_id, rows_done_at_least(2), timeout=300)
    runner = fleet.replicas[before["runner"]]
    paused = [runner.process.pid, *(c.pid for c in psutil.Process(runner.process.pid).children(recursive=True))]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        other = fleet.other_than(runner)
        wait_for(other, job_id, lambda body: body["attempts"] > before["attempts"], timeout=120)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    end = wait_for(other, job_id, lambda body: body["status"] == "succeeded", timeout=600)
    assert end["runner"] != before["runner"]
    assert np.array_equal(pixels(httpx.get(f"{runner.url}/jobs/{job_id}/result", timeout=60).content), reference)
    deadline = time.monotonic() + 60
    while f"job {job_id}: lease lost" not in runner.log.read_text() and time.monotonic() < deadline:
        time.sleep(1)
    assert f"job {job_id}: lease lost" in runner.log.read_text()  # the old runner noticed, and wrote nothing more


def test_a_database_restart_answers_503_and_jobs_carry_on(fleet: Fleet, scene: bytes, reference: np.ndarray) -> None:
    a = fleet.replicas["a"]
    job_id = submitted(a, scene, scale_factor=2, ddim_steps=1, seed=SEED)
    wait_for(a, job_id, rows_done_at_least(1), timeout=300)
    fleet.database.stop()
    try:
        for server in fleet.replicas.values():
            down = httpx.get(f"{server.url}/jobs/{job_id}", timeout=30)
            assert_error(down, 503, "jobs_database_unavailable")
            assert int(down.headers["retry-after"]) > 0 and "hndsr-secret" not in down.text
            assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
        time.sleep(3)
    finally:
        fleet.database.start()
    end = wait_for(a, job_id, lambda body: body["status"] == "succeeded", timeout=600)
    assert end["error"] is None
    assert np.array_equal(pixels(httpx.get(f"{a.url}/jobs/{job_id}/result", timeout=60).content), reference)


def test_storage_unreachable_for_twenty_seconds_is_waited_out(fleet: Fleet, scene: bytes,
                                                               reference: np.ndarray) -> None:
    a = fleet.replicas["a"]
    job_id = submitted(a, scene, scale_factor=2, ddim_steps=1, seed=SEED)
    wait_for(a, job_id, rows_done_at_least(1), timeout=300)
    fleet.storage.pause()
    try:
        time.sleep(20)
        assert status(a, job_id)["status"] == "running"
    finally:
        fleet.storage.resume()
    assert wait_for(a, job_id, lambda body: body["status"] == "succeeded", timeout=600)["attempts"] == 1
    assert np.array_equal(pixels(httpx.get(f"{a.url}/jobs/{job_id}/result", timeout=60).content), reference)


def test_replicas_restarted_one_by_one_finish_every_job(fleet: Fleet, scene: bytes, reference: np.ndarray) -> None:
    a = fleet.replicas["a"]
    jobs = [submitted(a, scene, scale_factor=2, ddim_steps=1, seed=SEED) for _ in range(2)]
    wait_for(a, jobs[0], rows_done_at_least(1), timeout=300)
    for name in ("a", "b"):
        fleet.replicas[name].stop()  # SIGTERM: its job goes back to the queue with its checkpoints
        fleet.start(name)
    for job_id in jobs:
        end = wait_for(fleet.replicas["b"], job_id, lambda body: body["status"] == "succeeded", timeout=900)
        assert end["error"] is None
        result = httpx.get(f"{fleet.replicas['a'].url}/jobs/{job_id}/result", timeout=60)
        assert np.array_equal(pixels(result.content), reference)
