"""Faults on the real server: its worker SIGKILLed mid-inference, its weights corrupted on disk before it
starts, and the disk filling up while a scene job writes its result (a real full filesystem: a small tmpfs)."""

from __future__ import annotations

import base64
import contextlib
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from hndsr_service.jobs.store import SqliteJobStore
from tests.helpers import encode, rgb_image
from tests.integration.server import Server, serving
from tests.integration.test_jobs import assert_error, ended, ended_any, metric, status, submitted
from tests.rasters import smooth, write_raster

pytestmark = pytest.mark.integration
WORKER_MODULE = "_bentoml_impl.worker.service"


def worker_of(server: Server) -> psutil.Process:
    workers = [p for p in psutil.Process(server.process.pid).children(recursive=True)
               if WORKER_MODULE in " ".join(p.cmdline())]
    assert len(workers) == 1, workers
    return workers[0]


def gauge(server: Server, name: str) -> float:
    return metric(httpx.get(f"{server.url}/metrics", timeout=10).text, name)


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached in {timeout:g} s")
        time.sleep(0.05)


def probe_ready(server: Server) -> int | None:
    """/ready's status, or None when nothing answers within a second (what a readiness probe sees)."""
    try:
        return httpx.get(f"{server.url}/ready", timeout=1).status_code
    except httpx.HTTPError:
        return None


def test_worker_killed_mid_inference_is_replaced(bentoml_home: Path, tmp_path: Path, report) -> None:
    large = {"image": base64.b64encode(encode(rgb_image(384, 384))).decode(), "scale_factor": 4}
    small = {"image": base64.b64encode(encode(rgb_image(32, 32))).decode(), "scale_factor": 2}
    with serving({"JOBS_DIR": str(tmp_path / "jobs")}, tmp_path / "server.log") as server:
        victim = worker_of(server)
        outcome: dict[str, object] = {}

        def in_flight() -> None:
            try:
                outcome["status"] = httpx.post(f"{server.url}/infer", json=large, timeout=120).status_code
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        request = threading.Thread(target=in_flight)
        request.start()
        wait_until(lambda: gauge(server, "hndsr_inferences_running") == 1, what="the inference running")
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        request.join(60)
        assert "status" not in outcome and isinstance(outcome["error"], httpx.TransportError), outcome  # dropped
        probes = [probe_ready(server)]
        while probes[-1] != 200 and time.monotonic() - killed < 120:
            probes.append(probe_ready(server))
        recovered = time.monotonic() - killed
        assert probes[0] != 200 and probes[-1] == 200, probes  # not ready until the new worker is
        replacement = worker_of(server)
        assert replacement.pid != victim.pid
        for _ in range(3):
            assert httpx.post(f"{server.url}/infer", json=small, timeout=60).status_code == 200
        # The killed worker's last values of its live gauges are gone from the sums.
        assert gauge(server, "hndsr_active_requests") == 0
        assert gauge(server, "hndsr_model_ready") == 1
        served = f"{time.monotonic() - killed:.1f}"
    report(f"faults: worker SIGKILLed mid-inference; ready again after {recovered:.1f} s "
           f"({len(probes) - 1} probes unanswered or not ready), 3 requests served {served} s after the kill")


def corrupted_home(bentoml_home: Path, home: Path) -> Path:
    """A BentoML home whose stored weights have 64 bytes flipped in the middle (as disk corruption would)."""
    shutil.copytree(bentoml_home / "models", home / "models", symlinks=True)
    weights = next((home / "models").glob("hndsr/*/hndsr.safetensors"))
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    weights.write_bytes(bytes(data))
    return home


def test_corrupt_weights_answer_503_with_the_reason(bentoml_home: Path, tmp_path: Path) -> None:
    home = corrupted_home(bentoml_home, tmp_path / "home")
    server = Server({"BENTOML_HOME": str(home), "JOBS_DIR": str(tmp_path / "jobs")}, tmp_path / "server.log")
    try:
        wait_until(lambda: probe_ready(server) == 503, timeout=120, what="/ready answering")
        ready = httpx.get(f"{server.url}/ready", timeout=10)
        reason = ready.json()["reason"]
        assert "checksum mismatch" in reason and ready.headers["retry-after"], ready.text
        assert httpx.get(f"{server.url}/health", timeout=10).json()["reason"] == reason
        png = encode(rgb_image())
        answers = [httpx.post(f"{server.url}/infer", json={"image": base64.b64encode(png).decode()}, timeout=30),
                   httpx.post(f"{server.url}/upscale", files={"image": ("a.png", png, "image/png")}, timeout=30),
                   httpx.post(f"{server.url}/jobs", files={"image": ("a.tif", b"II*\0", "image/tiff")}, timeout=30)]
        for response in answers:
            assert assert_error(response, 503, "model_unavailable")["detail"] == reason
        worker = worker_of(server)
        time.sleep(5)  # not a crash loop: the same worker keeps answering, the server keeps running
        assert worker_of(server).pid == worker.pid and server.process.poll() is None
        assert probe_ready(server) == 503
        assert server.log.read_text().count("model not loaded: checksum mismatch") == 1
    finally:
        server.stop()


@contextlib.contextmanager
def small_filesystem(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` at ``path`` (needs root, as CI is; skipped elsewhere)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({mounted.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Take all the free space of ``folder``'s filesystem but ``leave_bytes``."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        out.truncate(0)
        out.write(b"\0" * max(0, shutil.disk_usage(folder).free - leave_bytes))
    return filler


def test_job_status_stays_readable_on_a_full_disk(tmp_path: Path) -> None:
    """Regression: with no connection open, SQLite must recreate its WAL files to read, which a full disk
    refused, so GET /jobs/<id> answered 500 (seen once in test_disk_full_while_a_job_writes_its_result)."""
    with small_filesystem(tmp_path / "disk", 1) as disk:
        store = SqliteJobStore(disk / "jobs")
        store.create("job", {}, {}, {}, tiles_total=4)
        job = store.claim("replica", lease_s=30)
        filler = fill(disk, leave_bytes=0)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for done in range(1, 100):  # writes fail once the WAL needs a page the disk has not got
                store.checkpoint(job, done, done)
        for _ in range(20):
            job = store.get("job")
            assert job is not None and job.status == "running"
        filler.unlink()
        assert store.checkpoint(job, 4, 4) is False  # held, no cancel asked
        assert store.get("job").tiles_done == 4  # type: ignore[union-attr]


def test_disk_full_while_a_job_writes_its_result(bentoml_home: Path, tmp_path: Path) -> None:
    scene = write_raster(tmp_path / "scene.tif", smooth(512, 512, dtype="uint16", high=4000)
                         + np.random.default_rng(0).integers(0, 200, (1, 512, 512), dtype=np.uint16)).read_bytes()
    with small_filesystem(tmp_path / "disk", 48) as disk, \
            serving({"JOBS_DIR": str(disk / "jobs"), "RATE_LIMIT_PER_HOUR": "1000"}, tmp_path / "server.log") as server:
        ahead = submitted(server, scene, scale_factor=4)  # runs first and keeps the next one queued
        victim = submitted(server, scene, scale_factor=4)
        filler = fill(disk, leave_bytes=256 * 1024)
        assert status(server, victim)["status"] == "queued", "the job started before the disk was full"
        failed = ended(server, victim, "failed", timeout=300)
        assert failed["error"]["error"] == "disk_full" and "no space left" in failed["error"]["detail"], failed
        ended_any(server, ahead, timeout=300)  # it may have filled the disk first, or finished before
        folder = disk / "jobs" / victim  # a failed job's files are deleted, its record kept
        leftovers = [p.name for p in folder.iterdir()] if folder.exists() else []
        assert leftovers == [], f"files left behind: {leftovers}"
        assert metric(httpx.get(f"{server.url}/metrics").text, 'hndsr_job_failures_total{reason="disk_full"}') >= 1
        filler.unlink()  # with space again, the next job succeeds: nothing was left stuck
        again = submitted(server, scene, scale_factor=2)
        assert ended(server, again, "succeeded", timeout=300)["output"]["width"] == 1024
        assert_error(httpx.get(f"{server.url}/jobs/{victim}/result", timeout=30), 409, "job_has_no_result")
