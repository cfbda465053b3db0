"""Scene jobs through the real server: the routes' contract, progress, results with Range, cancellation,
limits, retention, metrics, and a job that survives a SIGKILL of the server."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.io import MemoryFile

from hndsr_service.local_server import kill_tree
from tests.helpers import encode, rgb_image
from tests.integration.server import Server, serving
from tests.rasters import NORTH_UP, UTM, psnr, smooth, write_raster

pytestmark = pytest.mark.integration

# Small tiles make even a small raster a many-tile job; long deadlines suit a loaded CI machine.
ENV = {"RATE_LIMIT_PER_HOUR": "1000", "REQUEST_TIMEOUT_S": "300", "TILE_SIZE": "64", "TILE_OVERLAP": "16"}
JOB_KEYS = {"job_id", "status", "progress", "created_at", "started_at", "finished_at", "error", "input", "output"}
SLOW_TILES = 21 * 21  # 1024 px in 64-px tiles overlapping by 16 px: 21 tiles a side


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def server(bentoml_home: Path, jobs_dir: Path) -> Iterator[Server]:
    with serving({**ENV, "JOBS_DIR": str(jobs_dir)}, jobs_dir.parent / "jobs-server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def rasters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("job_rasters")
    pan = smooth(96, 80, 1, seed=3, low=500, high=4000, dtype="uint16")
    pan[0, :6, :6] = 0
    # Slow to process on a CPU (441 tiles at x4), but a gradient compresses to almost nothing.
    ramp = np.add.outer(np.arange(1024), np.arange(1024)).astype(np.uint8)[None] // 2 + 40
    noise = np.random.default_rng(4).integers(1000, 60000, size=(1, 128, 128), dtype=np.uint16)
    huge = folder / "huge.tif"  # a header claiming 10 gigapixels, no pixel data
    with rasterio.open(huge, "w", driver="GTiff", width=100_000, height=100_000, count=1, dtype="uint8",
                       tiled=True, sparse_ok=True):
        pass
    damaged = write_raster(folder / "damaged.tif", smooth(64, 64, 1, high=4000, dtype="uint16"), blockysize=16)
    with rasterio.open(damaged) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_0_2", "TIFF", bidx=1))
    broken = bytearray(damaged.read_bytes())
    broken[offset:offset + 64] = b"\xff" * 64  # the header is fine; pixels of the third strip are not
    return {
        "pan": write_raster(folder / "pan.tif", pan, nodata=0).read_bytes(),
        "medium": write_raster(folder / "medium.tif", smooth(256, 192, 1, seed=6, low=100, high=9000,
                                                             dtype="uint16")).read_bytes(),
        "huge": huge.read_bytes(),
        "slow": write_raster(folder / "slow.tif", ramp, predictor=2).read_bytes(),
        "noise": write_raster(folder / "noise.tif", noise, compress=None).read_bytes(),
        "damaged": bytes(broken),
    }


def submit(server: Server, content: bytes, name: str = "scene.tif", **fields: Any) -> httpx.Response:
    data = {"scale_factor": "2", **{k: str(v) for k, v in fields.items()}}
    return httpx.post(f"{server.url}/jobs", files={"image": (name, content, "image/tiff")}, data=data, timeout=60)


def submitted(server: Server, content: bytes, **fields: Any) -> str:
    response = submit(server, content, **fields)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def status(server: Server, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/jobs/{job_id}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(server: Server, job_id: str, until: Any, timeout: float = 240.0) -> dict[str, Any]:
    """Poll the job until ``until(body)`` holds; fails with the last body past ``timeout``."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = status(server, job_id)
        if until(body):
            return body
        if body["status"] in ("failed", "cancelled", "succeeded"):
            pytest.fail(f"job ended {body['status']} (error {body['error']}), which was not expected")
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not get there in {timeout} s; last seen: {body}")


def finished(server: Server, job_id: str, timeout: float = 240.0) -> dict[str, Any]:
    return wait_for(server, job_id, lambda b: b["status"] == "succeeded", timeout)


def running(server: Server, job_id: str, timeout: float = 240.0) -> dict[str, Any]:
    return wait_for(server, job_id, lambda b: b["status"] == "running" and b["progress"]["tiles_done"] > 0,
                    timeout)


def ended_any(server: Server, job_id: str, timeout: float = 120.0) -> None:
    """Wait until the job has left queued/running, whatever it ended as."""
    deadline = time.monotonic() + timeout
    while status(server, job_id)["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)


def ended(server: Server, job_id: str, end: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body = status(server, job_id)
    while body["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        body = status(server, job_id)
    assert body["status"] == end, body
    return body


def deleted(server: Server, jobs_dir: Path, job_id: str, timeout: float = 120.0) -> httpx.Response:
    """DELETE a job: from then on it is gone (410), and once it has stopped its folder is too."""
    response = httpx.delete(f"{server.url}/jobs/{job_id}", timeout=30)
    assert response.status_code in (200, 202), response.text
    assert_error(httpx.get(f"{server.url}/jobs/{job_id}", timeout=30), 410, "job_deleted")
    deadline = time.monotonic() + timeout
    while (jobs_dir / job_id).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (jobs_dir / job_id).exists(), "a deleted job's folder must be removed once it has stopped"
    return response


def assert_error(response: httpx.Response, status_code: int, code: str) -> dict:
    assert response.status_code == status_code, response.text[:500]
    body = response.json()
    assert body["error"] == code and isinstance(body["detail"], str) and body["detail"], body
    return body


def job_folders(jobs_dir: Path) -> set[str]:
    return {p.name for p in jobs_dir.iterdir() if p.is_dir()}


CANCELLED = 'hndsr_job_seconds_count{status="cancelled"}'


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# -- the contract --------------------------------------------------------------------------------------------


def test_submit_status_result_and_range(server: Server, rasters: dict[str, bytes]) -> None:
    response = submit(server, rasters["pan"], scale_factor=2, ddim_steps=1, seed=5)
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["job_id"]
    assert body == {"job_id": job_id, "status": "queued", "status_url": f"/jobs/{job_id}",
                    "result_url": f"/jobs/{job_id}/result"}
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)

    done = finished(server, job_id)
    assert JOB_KEYS <= set(done)
    assert done["progress"]["tiles_done"] == done["progress"]["tiles_total"] > 1
    assert done["progress"]["fraction"] == 1.0 and done["error"] is None
    assert done["started_at"] and done["finished_at"] and done["created_at"] <= done["started_at"]
    assert done["input"] == {"width": 80, "height": 96, "bands": 1, "dtype": "uint16", "crs": "EPSG:32631"}
    out = done["output"]
    assert (out["width"], out["height"], out["bands"], out["dtype"], out["crs"]) == (160, 192, 1, "uint16",
                                                                                    "EPSG:32631")

    result = httpx.get(f"{server.url}{body['result_url']}", timeout=60)
    assert result.status_code == 200 and result.headers["content-type"] == "image/tiff"
    assert int(result.headers["content-length"]) == len(result.content) > 100
    with MemoryFile(result.content) as mem, mem.open() as dst:
        assert dst.crs == UTM and dst.transform.almost_equals(NORTH_UP @ Affine.scale(0.5))
        assert (dst.width, dst.height, dst.dtypes[0], dst.nodata) == (160, 192, "uint16", 0)
        assert dst.tags()["HNDSR_SEED"] == "5" and dst.tags()["HNDSR_DDIM_STEPS"] == "1"
        job_pixels = dst.read(1)

    partial = httpx.get(f"{server.url}{body['result_url']}", headers={"range": "bytes=0-99"}, timeout=60)
    assert partial.status_code == 206
    assert partial.content == result.content[:100]
    assert partial.headers["content-range"] == f"bytes 0-99/{len(result.content)}"

    # The same input and seed through the synchronous API: the same pixels (the bound is 45 dB).
    sync = httpx.post(f"{server.url}/upscale", files={"image": ("pan.tif", rasters["pan"], "image/tiff")},
                      data={"scale_factor": "2", "ddim_steps": "1", "seed": "5"}, timeout=300)
    assert sync.status_code == 200, sync.text
    with MemoryFile(sync.content) as mem, mem.open() as dst:
        sync_pixels = dst.read(1)
    assert psnr(job_pixels, sync_pixels, peak=4000 - 500) >= 45.0
    assert (job_pixels == sync_pixels).all()


def test_unknown_and_malformed_ids_are_404(server: Server) -> None:
    for path in ("/jobs/" + "0" * 32, "/jobs/" + "0" * 32 + "/result", "/jobs/not-an-id", "/jobs/not-an-id/result",
                 "/jobs/" + "A" * 32, "/jobs/" + "0" * 31 + "g"):
        assert_error(httpx.get(f"{server.url}{path}", timeout=10), 404, "job_not_found")
    assert_error(httpx.delete(f"{server.url}/jobs/" + "f" * 32, timeout=10), 404, "job_not_found")


def test_bad_submissions_leave_nothing(server: Server, jobs_dir: Path, rasters: dict[str, bytes]) -> None:
    before = job_folders(jobs_dir)
    body = assert_error(submit(server, rasters["pan"], colour="red"), 422, "invalid_request")
    assert "colour" in body["detail"]
    assert_error(submit(server, rasters["pan"], output_format="png"), 422, "invalid_request")
    assert_error(submit(server, rasters["pan"], bands="0,1"), 422, "invalid_request")
    assert_error(submit(server, rasters["pan"], bands="2"), 422, "invalid_image")
    assert_error(submit(server, rasters["pan"], scale_factor=9), 422, "invalid_request")
    assert_error(submit(server, b"not a raster at all"), 422, "invalid_image")
    as_json = httpx.post(f"{server.url}/jobs", json={"image": "x"}, timeout=30)
    assert_error(as_json, 415, "unsupported_media_type")
    assert_error(submit(server, rasters["pan"][:6]), 422, "invalid_image")
    assert_error(submit(server, rasters["huge"]), 413, "image_too_large")
    no_file = httpx.post(f"{server.url}/jobs", data={"scale_factor": "2"}, files={"other": ("x", b"")}, timeout=30)
    assert no_file.status_code == 422
    assert job_folders(jobs_dir) == before


def test_upload_cut_off_midway_leaves_nothing(server: Server, jobs_dir: Path, rasters: dict[str, bytes]) -> None:
    """The client announces a body, sends part of it and hangs up: no job, no folder, the server carries on."""
    before = job_folders(jobs_dir)
    body = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.tif\"\r\n"
            b"Content-Type: image/tiff\r\n\r\n" + rasters["noise"])
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     + f"Content-Length: {len(body) + 1000}\r\n\r\n".encode() + body[: len(body) // 2])
    time.sleep(1)
    assert job_folders(jobs_dir) == before
    assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 200


def test_truncated_raster_never_succeeds(server: Server, rasters: dict[str, bytes]) -> None:
    """Pixels cut off after a complete header: refused at submit, or (the header alone being checked there)
    the job fails when it reads them; it never succeeds nor fails as an internal error."""
    response = submit(server, rasters["pan"][:300])
    if response.status_code != 202:
        assert_error(response, 422, "invalid_image")
        return
    end = ended(server, response.json()["job_id"], "failed")
    assert end["error"]["error"] == "invalid_image"


# -- a running job ----------------------------------------------------------------------------------------


def test_running_job_progress_sync_requests_and_cancel(server: Server, jobs_dir: Path,
                                                       rasters: dict[str, bytes]) -> None:
    cancelled_before = metric(httpx.get(f"{server.url}/metrics", timeout=30).text, CANCELLED)
    job_id = submitted(server, rasters["slow"], scale_factor=4)
    try:
        body = running(server, job_id)
        assert body["progress"]["tiles_total"] == SLOW_TILES
        assert 0 < body["progress"]["fraction"] < 1 and body["started_at"] and body["finished_at"] is None
        assert body["input"]["width"] == 1024 and body["output"]["width"] == 4096
        assert (jobs_dir / job_id).is_dir()
        assert_error(httpx.get(f"{server.url}/jobs/{job_id}/result", timeout=30), 409, "job_not_finished")

        # A synchronous request is answered while the job holds the model between tile rows.
        sync = httpx.post(f"{server.url}/upscale", files={"image": ("a.png", encode(rgb_image(32, 32)), "image/png")},
                          data={"scale_factor": "2"}, timeout=300)
        assert sync.status_code == 200, sync.text
        later = status(server, job_id)
        assert later["status"] == "running", "the job was not running any more: the check proved nothing"
        assert later["progress"]["tiles_done"] >= body["progress"]["tiles_done"]
    finally:
        cancel = deleted(server, jobs_dir, job_id)
    assert cancel.status_code == 202 and cancel.json()["progress"]["tiles_done"] < SLOW_TILES
    assert metric(httpx.get(f"{server.url}/metrics", timeout=30).text, CANCELLED) == cancelled_before + 1
    assert_error(httpx.get(f"{server.url}/jobs/{job_id}/result", timeout=30), 410, "job_deleted")


def test_cancel_a_queued_job(server: Server, jobs_dir: Path, rasters: dict[str, bytes]) -> None:
    first = submitted(server, rasters["slow"], scale_factor=4)
    second = submitted(server, rasters["pan"])
    try:
        assert status(server, second)["status"] == "queued"
        cancel = deleted(server, jobs_dir, second, timeout=0)
        assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    finally:
        deleted(server, jobs_dir, first)


def test_download_while_another_client_deletes(server: Server, jobs_dir: Path, rasters: dict[str, bytes]) -> None:
    job_id = submitted(server, rasters["noise"], scale_factor=4)
    finished(server, job_id)
    url = f"{server.url}/jobs/{job_id}/result"
    size = int(httpx.head(url, timeout=30).headers["content-length"])
    assert size > 128 * 1024
    outcomes: list[tuple[int, int]] = []
    first_chunk = threading.Event()

    def download() -> None:
        with httpx.stream("GET", url, timeout=60) as response:
            received = 0
            for chunk in response.iter_bytes(16 * 1024):
                received += len(chunk)
                first_chunk.set()
                time.sleep(0.01)  # a slow reader: the DELETE lands in the middle
            outcomes.append((response.status_code, received))
        first_chunk.set()

    readers = [threading.Thread(target=download) for _ in range(2)]
    for reader in readers:
        reader.start()
    assert first_chunk.wait(30)
    deletion = deleted(server, jobs_dir, job_id, timeout=0)
    for reader in readers:
        reader.join(60)
    assert deletion.status_code == 200 and deletion.json()["expired"] is True
    assert len(outcomes) == 2
    for code, received in outcomes:
        assert (code, received) == (200, size) or code == 410, outcomes
    assert_error(httpx.get(url, timeout=30), 410, "job_deleted")
    assert_error(httpx.delete(f"{server.url}/jobs/{job_id}", timeout=30), 410, "job_deleted")


def test_failing_job_is_reported_and_counted(server: Server, rasters: dict[str, bytes]) -> None:
    label = 'hndsr_job_failures_total{reason="invalid_input"}'
    before = metric(httpx.get(f"{server.url}/metrics", timeout=30).text, label)
    job_id = submitted(server, rasters["damaged"])  # the header is valid: refused only when its pixels are read
    end = ended(server, job_id, "failed")
    assert end["error"]["error"] == "invalid_image" and end["error"]["detail"]
    assert_error(httpx.get(f"{server.url}/jobs/{job_id}/result", timeout=30), 409, "job_has_no_result")
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert metric(text, label) == before + 1
    assert "hndsr_jobs_queued " in text and "hndsr_jobs_running " in text
    assert metric(text, 'hndsr_job_seconds_count{status="failed"}') >= 1
    assert re.search(r'^hndsr_job_seconds_bucket\{[^}]*status="failed"[^}]*\} ', text, re.MULTILINE)


# -- limits and retention ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    folder = tmp_path_factory.mktemp("limited")
    env = {**ENV, "JOBS_DIR": str(folder / "jobs"), "MAX_QUEUED_JOBS": "1", "MAX_JOB_UPLOAD_MB": "0.25",
           "MAX_JOB_PIXELS": "20000000000", "JOB_RETENTION_H": "0.0002"}  # results kept for 0.72 s
    srv = Server(env, folder / "server.log")
    try:
        srv.wait_ready()
        yield srv, folder / "jobs"
    finally:
        srv.stop()


def test_queue_limit_answers_503_with_retry_after(limited: tuple[Server, Path], rasters: dict[str, bytes]) -> None:
    server, jobs_dir = limited
    first = submitted(server, rasters["slow"], scale_factor=4)
    try:
        refused = submit(server, rasters["pan"])
        assert_error(refused, 503, "jobs_queue_full")
        assert int(refused.headers["retry-after"]) > 0
    finally:
        deleted(server, jobs_dir, first)


def raw_multipart(content: bytes) -> tuple[bytes, bytes]:
    """The head (request line, headers) and body of a ``POST /jobs`` with ``content`` as its image."""
    body = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.tif\"\r\n"
            b"Content-Type: image/tiff\r\n\r\n" + content + b"\r\n--b--\r\n")
    head = (b"POST /jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode())
    return head, body


def test_queue_limit_holds_for_overlapping_uploads(limited: tuple[Server, Path], rasters: dict[str, bytes]) -> None:
    server, jobs_dir = limited
    host, port = server.url.removeprefix("http://").split(":")
    head, body = raw_multipart(rasters["pan"])
    accepted: list[str] = []
    with socket.create_connection((host, int(port)), timeout=30) as slow:
        slow.sendall(head + body[:100])  # a slow client: its upload is still arriving ...
        time.sleep(1.0)
        fast = submit(server, rasters["pan"])  # ... when another one submits a job
        accepted += [fast.json()["job_id"]] if fast.status_code == 202 else []
        slow.sendall(body[100:])
        reply = b""
        while chunk := slow.recv(65536):
            reply += chunk
    try:
        status_line = reply.split(b"\r\n", 1)[0]
        if b" 202 " in status_line:
            accepted.append(re.search(rb'"job_id":"([0-9a-f]{32})"', reply).group(1).decode())
        assert len(accepted) == 1, f"{len(accepted)} jobs accepted with MAX_QUEUED_JOBS=1"
    finally:
        for job_id in accepted:
            deleted(server, jobs_dir, job_id)


def test_upload_limit_answers_413(limited: tuple[Server, Path], rasters: dict[str, bytes]) -> None:
    server, jobs_dir = limited
    big = rasters["noise"] + b"\0" * (300 * 1024)
    assert_error(submit(server, big), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while the body streams
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.tif\"\r\n"
        yield b"Content-Type: image/tiff\r\n\r\n"
        for _ in range(40):
            yield b"\0" * (16 * 1024)
        yield b"\r\n--b--\r\n"

    streamed = httpx.post(f"{server.url}/jobs", content=chunks(), timeout=60,
                          headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(streamed, 413, "payload_too_large")
    # The synchronous APIs keep their own, larger limit (MAX_PAYLOAD_MB): the same size is read, and refused
    # for what it is (not an image), not for its size.
    junk = b"not an image " * (len(big) // 13)
    answer = httpx.post(f"{server.url}/upscale", files={"image": ("a.png", junk, "image/png")}, timeout=60)
    assert_error(answer, 422, "invalid_image")
    assert all(p.name.startswith("jobs.sqlite") for p in jobs_dir.iterdir())


def test_job_that_cannot_fit_the_disk_is_refused_at_submit(limited: tuple[Server, Path], tmp_path: Path) -> None:
    """10 gigapixels at x8 is a 640 GB product (written twice): no test machine has that much free disk."""
    server, jobs_dir = limited
    huge = tmp_path / "huge.tif"
    with rasterio.open(huge, "w", driver="GTiff", width=100_000, height=100_000, count=1, dtype="uint8",
                       tiled=True, blockxsize=4096, blockysize=4096, sparse_ok=True):
        pass
    assert_error(submit(server, huge.read_bytes(), scale_factor=8), 507, "insufficient_storage")
    assert all(p.name.startswith("jobs.sqlite") for p in jobs_dir.iterdir())


def test_results_expire_after_retention(limited: tuple[Server, Path], rasters: dict[str, bytes]) -> None:
    server, jobs_dir = limited
    job_id = submitted(server, rasters["pan"])
    wait_for(server, job_id, lambda b: b["status"] == "succeeded")
    url = f"{server.url}/jobs/{job_id}/result"
    deadline = time.monotonic() + 60  # housekeeping runs every 10 s
    while httpx.get(url, timeout=30).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert_error(httpx.get(url, timeout=30), 410, "job_deleted")
    assert_error(httpx.get(f"{server.url}/jobs/{job_id}", timeout=30), 410, "job_deleted")
    assert not (jobs_dir / job_id).exists()


# -- durability --------------------------------------------------------------------------------------------


def crash(server: Server) -> None:
    """SIGKILL the server and every process under it: no shutdown hook runs."""
    kill_tree(server.process)


def test_job_survives_a_killed_server(bentoml_home: Path, tmp_path: Path, rasters: dict[str, bytes]) -> None:
    env = {**ENV, "JOBS_DIR": str(tmp_path / "jobs")}
    first = Server(env, tmp_path / "first.log")
    try:
        first.wait_ready()
        job_id = submitted(first, rasters["medium"], scale_factor=2, ddim_steps=1, seed=9)
        before = running(first, job_id)
    finally:
        crash(first)  # no shutdown hook runs: the job stays "running"
    killed_at = datetime.now(timezone.utc)
    assert before["status"] == "running"

    second = Server(env, tmp_path / "second.log")
    try:
        second.wait_ready()
        seen: set[str] = set()

        def done(body: dict[str, Any]) -> bool:
            seen.add(body["status"])
            return body["status"] == "succeeded"

        end = wait_for(second, job_id, done, timeout=300)  # its lease runs out (JOB_LEASE_S, 30 s): taken over
        assert "failed" not in seen and end["error"] is None
        assert end["attempts"] == 2 and datetime.fromisoformat(end["finished_at"]) > killed_at
        assert end["progress"]["tiles_done"] == end["progress"]["tiles_total"]
        result = httpx.get(f"{second.url}/jobs/{job_id}/result", timeout=60)
        assert result.status_code == 200
        with MemoryFile(result.content) as mem, mem.open() as dst:
            assert (dst.width, dst.height) == (384, 512) and dst.tags()["HNDSR_SEED"] == "9"
        # The killed run's scratch (work-1) is swept by the housekeeping of the replica still up.
        deadline = time.monotonic() + 60
        while (leftovers := sorted(p.name for p in (tmp_path / "jobs" / job_id).iterdir())) != ["input", "result.tif"]:
            assert time.monotonic() < deadline, leftovers
            time.sleep(1)
    finally:
        second.stop()
