"""The page's side of contracts the real server may not offer yet, against a stand-in service.

The stand-in serves the real page (``hndsr_service.ui``) and answers as issue 7 specifies: ``POST /jobs`` ->
202 ``{job_id, status, status_url, result_url}``, ``GET /jobs/<id>`` with ``progress.tiles_done /
tiles_total / fraction``, ``GET /jobs/<id>/result`` (a GeoTIFF), ``DELETE /jobs/<id>``, and a GeoTIFF from
``/upscale`` for a TIFF input. It requires an API key, as a service with ``API_KEYS`` does.
"""

from __future__ import annotations

import io
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hndsr_service.settings import ApiKey, Settings
from hndsr_service.ui import ui_routes
from tests.browser.helpers import DESKTOP, PageLog
from tests.helpers import DATA, encode, free_port, requires_data, rgb_image

pytestmark = pytest.mark.integration

KEY = "ui-test-key-0123456789"
TILES = 4


def upscaled_tiff(data: bytes, scale: int) -> bytes:
    """A single-band uint16 'result': the input's first band repeated ``scale`` times each way."""
    array = tifffile.imread(io.BytesIO(data))
    band = array if array.ndim == 2 else array[..., 0]
    out = io.BytesIO()
    tifffile.imwrite(out, np.kron(band, np.ones((scale, scale), band.dtype)).astype(np.uint16),
                     photometric="minisblack")
    return out.getvalue()


class StandIn:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.finish_jobs = True
        self.jobs_documented = True
        self.jobs_enabled = True
        self.upscale_limit: int | None = None
        self.upscale_refusal: tuple[int, str] | None = None  # (status, code): too long for the synchronous API
        settings = Settings(max_image_pixels=100_000, max_payload_mb=0.5, api_keys=(ApiKey(KEY),))
        self.app = Starlette(routes=[
            *ui_routes(settings),
            Route("/ready", lambda _: JSONResponse({"status": "ready"})),
            Route("/docs.json", self.spec),
            Route("/upscale", self.upscale, methods=["POST"]),
            Route("/jobs", self.submit, methods=["POST"]),
            Route("/jobs/{job_id}", self.job, methods=["GET", "DELETE"]),
            Route("/jobs/{job_id}/result", self.result),
        ])

    async def spec(self, _: Request) -> Response:
        return JSONResponse({"paths": {"/upscale": {}, **({"/jobs": {}} if self.jobs_documented else {})}})

    def authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {KEY}"

    @staticmethod
    def unauthorised() -> Response:
        return JSONResponse({"error": "unauthorized", "detail": "a valid API key is required"}, status_code=401)

    async def upscale(self, request: Request) -> Response:
        self.calls.append("POST /upscale")
        if not self.authorised(request):
            return self.unauthorised()
        form = await request.form()
        data = await form["image"].read()
        pixels = int(np.prod(tifffile.TiffFile(io.BytesIO(data)).pages[0].shape[:2]))
        if self.upscale_refusal:
            status, code = self.upscale_refusal
            return JSONResponse({"error": code, "detail": "longer than the 30 s deadline"}, status_code=status)
        if self.upscale_limit is not None and pixels > self.upscale_limit:
            return JSONResponse({"error": "image_too_large", "detail": f"{pixels:,} pixels; the limit is "
                                 f"{self.upscale_limit:,}"}, status_code=413)
        body = upscaled_tiff(data, int(form["scale_factor"]))
        return Response(body, media_type="image/tiff", headers={"x-hndsr-latency-ms": "12.5"})

    async def submit(self, request: Request) -> Response:
        self.calls.append("POST /jobs")
        if not self.jobs_enabled:
            return Response("Not Found", status_code=404)
        if not self.authorised(request):
            return self.unauthorised()
        form = await request.form()
        job_id = uuid.uuid4().hex
        self.jobs[job_id] = {"polls": 0, "status": "queued",
                             "result": upscaled_tiff(await form["image"].read(), int(form["scale_factor"]))}
        return JSONResponse({"job_id": job_id, "status": "queued", "status_url": f"/jobs/{job_id}",
                             "result_url": f"/jobs/{job_id}/result"}, status_code=202)

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = self.jobs[job_id]
        self.calls.append(f"{request.method} /jobs/<id>")
        if request.method == "DELETE":
            job["status"] = "cancelled"
            return JSONResponse({"job_id": job_id, "status": "cancelled"})
        if job["status"] != "cancelled":
            job["polls"] += 1
            done = min(TILES, job["polls"] - 1) if self.finish_jobs else min(1, job["polls"] - 1)
            job["done"] = max(done, 0)
            job["status"] = ("queued" if job["polls"] == 1 else
                             "succeeded" if job["done"] == TILES else "running")
        done = job.get("done", 0)
        return JSONResponse({"job_id": job_id, "status": job["status"], "error": None,
                             "progress": {"tiles_done": done, "tiles_total": TILES, "fraction": done / TILES}})

    async def result(self, request: Request) -> Response:
        self.calls.append("GET /jobs/<id>/result")
        return Response(self.jobs[request.path_params["job_id"]]["result"], media_type="image/tiff")


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[StandIn, str]]:
    service = StandIn()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(service.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield service, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def page(browser: Any, stand_in: tuple[StandIn, str]) -> Iterator[Any]:
    service, url = stand_in
    service.calls.clear()
    service.finish_jobs = True
    service.jobs_documented = True
    service.jobs_enabled = True
    service.upscale_limit = None
    service.upscale_refusal = None
    context = browser.new_context(accept_downloads=True, viewport=DESKTOP)
    page = context.new_page()
    log = PageLog()
    log.attach(page)
    page.goto(f"{url}/ui")
    page.locator("#service-state.ready").wait_for()
    yield page
    context.close()
    assert log.outside(url) == []
    assert all(re.match(r"Failed to load resource: the server responded with a status of (401|404|413|504)", line)
               for line in log.console_errors), log.console_errors


def small_geotiff(tmp_path: Path) -> Path:
    path = tmp_path / "small.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, (rng.random((45, 60)) * 4000 + 1000).astype(np.uint16), photometric="minisblack")
    return path


def test_key_is_asked_for_and_a_geotiff_result_is_drawn(page: Any, stand_in: tuple[StandIn, str],
                                                        tmp_path: Path) -> None:
    service, _ = stand_in
    assert page.locator("#api-key").is_visible()
    page.set_input_files("#file", str(small_geotiff(tmp_path)))
    page.locator("#run:enabled").wait_for()
    assert "1 band uint16" in page.locator("#file-info").inner_text()
    page.select_option("#scale", "3")
    page.click("#run")
    page.locator("#error").wait_for()
    assert page.locator("#error").inner_text().startswith("401")

    page.fill("#api-key", KEY)
    assert page.evaluate("() => sessionStorage.getItem('hndsr.apiKey')") == KEY
    page.click("#run")
    page.locator("#result-info").wait_for()
    assert page.locator("#error").is_hidden()
    assert page.locator("#after").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [180, 135]
    with page.expect_download() as info:
        page.click("#download")
    assert info.value.suggested_filename == "small_x3.tif"
    assert tifffile.imread(info.value.path()).shape == (135, 180)
    assert service.calls == ["POST /upscale", "POST /upscale"]


@requires_data("geotiff", "spacenet_pan1_uint16.tif")
def test_large_raster_goes_to_jobs_with_tile_progress(page: Any, stand_in: tuple[StandIn, str]) -> None:
    service, _ = stand_in
    page.fill("#api-key", KEY)
    page.set_input_files("#file", str(DATA / "geotiff" / "spacenet_pan1_uint16.tif"))  # 600x600 > 100,000
    page.locator("#run:enabled").wait_for()
    page.select_option("#scale", "2")
    page.click("#run")
    seen = set()
    deadline = time.monotonic() + 30
    while page.locator("#result-info").is_hidden() and time.monotonic() < deadline:
        seen.add(page.locator("#status").inner_text())
        assert page.locator("#run").is_disabled() or page.locator("#result-info").is_visible()
        time.sleep(0.1)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    assert any("tiles 2 / 4 (50 %)" in text for text in seen), seen
    assert any(re.search(r"tiles 3 / 4 \(75 %\) · about \d+ s left", text) for text in seen), seen  # the pace
    assert page.locator("#after").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [1200, 1200]
    assert service.calls[0] == "POST /jobs" and service.calls[-1] == "GET /jobs/<id>/result"
    assert "POST /upscale" not in service.calls


@requires_data("geotiff", "spacenet_pan1_uint16.tif")
def test_cancel_deletes_the_job(page: Any, stand_in: tuple[StandIn, str]) -> None:
    service, _ = stand_in
    service.finish_jobs = False
    page.fill("#api-key", KEY)
    page.set_input_files("#file", str(DATA / "geotiff" / "spacenet_pan1_uint16.tif"))
    page.locator("#run:enabled").wait_for()
    page.click("#run")
    page.locator("#status", has_text="tiles 1 / 4").wait_for(timeout=15_000)
    page.click("#cancel")
    page.locator("#status", has_text="Cancelled").wait_for()
    assert page.locator("#run").is_enabled() and page.locator("#cancel").is_hidden()
    deadline = time.monotonic() + 5
    while "DELETE /jobs/<id>" not in service.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "DELETE /jobs/<id>" in service.calls


def test_drop_a_file_on_the_page(page: Any) -> None:
    png = encode(rgb_image(30, 40))
    transfer = page.evaluate_handle("""bytes => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "dropped.png", { type: "image/png" }));
        return transfer;
    }""", list(png))
    page.dispatch_event("body", "dragenter", {"dataTransfer": transfer})
    assert "dragging" in page.locator("body").get_attribute("class")
    page.dispatch_event("body", "drop", {"dataTransfer": transfer})
    page.locator("#run:enabled").wait_for()
    assert "dropped.png" in page.locator("#file-info").inner_text()
    assert "dragging" not in (page.locator("body").get_attribute("class") or "")
    assert page.locator("#before").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [40, 30]
    assert page.locator("#file").evaluate("input => input.files[0].name") == "dropped.png"


@requires_data("geotiff", "spacenet_pan1_uint16.tif")
def test_file_over_the_payload_limit_is_not_sent_without_jobs(page: Any, stand_in: tuple[StandIn, str]) -> None:
    service, _ = stand_in
    service.jobs_documented = False
    page.reload()
    page.locator("#service-state.ready").wait_for()
    page.set_input_files("#file", str(DATA / "geotiff" / "spacenet_pan1_uint16.tif"))  # 705 KB > 0.5 MB
    page.locator("#run:enabled").wait_for()
    page.click("#run")
    page.locator("#error").wait_for()
    assert page.locator("#error").inner_text().startswith("413 · payload too large")
    assert service.calls == []


def test_sync_413_without_jobs_shows_the_413(page: Any, stand_in: tuple[StandIn, str], tmp_path: Path) -> None:
    """A service that has no /jobs: the page tries it after /upscale's 413, then shows that 413."""
    service, _ = stand_in
    service.jobs_documented = False
    service.jobs_enabled = False
    service.upscale_limit = 1000
    page.reload()
    page.locator("#service-state.ready").wait_for()
    page.fill("#api-key", KEY)
    page.set_input_files("#file", str(small_geotiff(tmp_path)))  # 2,700 pixels
    page.locator("#run:enabled").wait_for()
    page.click("#run")
    page.locator("#error").wait_for()
    assert page.locator("#error").inner_text() == "413 · image too large\n2,700 pixels; the limit is 1,000"
    assert service.calls == ["POST /upscale", "POST /jobs"]


@pytest.mark.parametrize("refusal", [(504, "inference_timeout"), (413, "too_slow_for_sync")])
def test_sync_deadline_continues_as_a_job(page: Any, stand_in: tuple[StandIn, str], tmp_path: Path,
                                          refusal: tuple[int, str]) -> None:
    """Past the deadline (504), or refused at once by the measured speed (413): the work is longer than a
    synchronous request may take, so it becomes a job."""
    service, _ = stand_in
    service.upscale_refusal = refusal
    page.fill("#api-key", KEY)
    page.set_input_files("#file", str(small_geotiff(tmp_path)))
    page.locator("#run:enabled").wait_for()
    page.select_option("#scale", "2")
    page.click("#run")
    page.locator("#result-info").wait_for(timeout=30_000)
    assert page.locator("#after").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [120, 90]
    assert service.calls[:2] == ["POST /upscale", "POST /jobs"] and service.calls[-1] == "GET /jobs/<id>/result"
