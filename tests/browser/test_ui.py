"""The web page at /ui against the real server, in a real browser: real images at x2 and x4, the split,
zoom, download, TIFF inputs, a raster beyond the synchronous limit as a job, a 413 and a 422 in words and a
phone-sized screen. With HNDSR_UPDATE_SCREENSHOTS=1 the screenshots are saved in docs/ui/."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.warp import transform as warp_transform

from tests.browser.helpers import DESKTOP, PHONE, PageLog, shot
from tests.helpers import DATA, requires_data
from tests.integration.server import Server, serving

pytestmark = [pytest.mark.integration, requires_data("rsscn7", "val"), requires_data("geotiff")]

# 400x400 RSSCN7 images fit under 200,000 pixels; the 768x768 Sentinel-2 scene does not, so it runs as a job
# (up to 1,000,000 pixels); the 2658x2667 public raster is beyond both: a real 413.
LIMIT = 200_000
JOB_LIMIT = 1_000_000
# A shared 2-core machine can take longer than the default 30 s deadline for the 4-band float raster.
ENV = {"MAX_IMAGE_PIXELS": str(LIMIT), "MAX_JOB_PIXELS": str(JOB_LIMIT), "RATE_LIMIT_PER_HOUR": "1000",
       "REQUEST_TIMEOUT_S": "150"}
PHOTO = DATA / "rsscn7" / "val" / "fResident" / "f001.jpg"
GEOTIFF = DATA / "geotiff" / "scene_1_Landsat-8.tif"
FLOAT_TIFF = DATA / "geotiff" / "spacenet_ms1_4band_float64.tif"
SCENE = DATA / "geotiff" / "scene_1_Sentinel-2.tif"
OVERSIZED = DATA / "geotiff" / "public" / "image_north.tif"
PUBLIC_RGB = DATA / "geotiff" / "public" / "image_rgb.tif"  # 512 x 512, Web Mercator: a job here
RESULT_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def server(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("ui_server")
    with serving({**ENV, "JOBS_DIR": str(folder / "jobs")}, folder / "server.log") as srv:
        yield srv


@pytest.fixture
def opened(browser: Any, server: Server, request: pytest.FixtureRequest) -> Iterator[tuple[Any, PageLog]]:
    """A fresh page on /ui with its log; the page must never leave the service."""
    options = getattr(request, "param", {"viewport": DESKTOP})
    context = browser.new_context(accept_downloads=True, **options)
    page = context.new_page()
    log = PageLog()
    log.attach(page)
    page.goto(f"{server.url}/ui")
    page.locator("#service-state.ready").wait_for()
    yield page, log
    context.close()
    assert log.outside(server.url) == []


def choose(page: Any, path: Path) -> None:
    page.set_input_files("#file", str(path))
    page.locator("#run:enabled").wait_for()
    page.locator("#file-info").wait_for()


def upscale(page: Any, scale: int) -> tuple[int, int]:
    """Run at ``scale`` and wait for #after; returns its natural size."""
    page.select_option("#scale", str(scale))
    page.click("#run")
    assert page.locator("#run").is_disabled() or page.locator("#result-info").is_visible()
    page.locator("#result-info").wait_for(timeout=RESULT_TIMEOUT_MS)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    assert page.locator("#run").is_enabled()
    return tuple(page.locator("#after").evaluate("img => [img.naturalWidth, img.naturalHeight]"))


def download(page: Any, tmp_path: Path) -> Path:
    with page.expect_download() as info:
        page.click("#download")
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    return target


def split_value(page: Any) -> int:
    return int(page.locator("#split").get_attribute("aria-valuenow"))


def test_page_served_beside_openapi(server: Server) -> None:
    page = httpx.get(f"{server.url}/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for element in ("file", "scale", "steps", "seed", "run", "status", "before", "after", "split", "download",
                    "error"):
        assert f'id="{element}"' in page.text
    assert httpx.get(f"{server.url}/ui/app.js").status_code == 200
    assert httpx.get(f"{server.url}/ui/vendor/geotiff.js").status_code == 200
    assert httpx.get(f"{server.url}/ui/config.json").json()["max_image_pixels"] == LIMIT
    assert "swagger" in httpx.get(f"{server.url}/").text.lower()


def test_photo_x2_and_x4_split_zoom_download(opened: tuple[Any, PageLog], tmp_path: Path) -> None:
    page, log = opened
    assert page.locator("#scale").input_value() == "4" and page.locator("#steps").input_value() == "0"
    assert page.locator("#run").is_disabled()
    shot(page, "1-start")
    choose(page, PHOTO)
    assert "400 × 400" in page.locator("#file-info").inner_text()
    shot(page, "2-chosen")

    assert upscale(page, 2) == (800, 800)
    saved = download(page, tmp_path)
    assert saved.name == "f001_x2.png" and Image.open(saved).size == (800, 800)

    assert upscale(page, 4) == (1600, 1600)
    assert re.search(r"1,600 × 1,600", page.locator("#result-info").inner_text())
    shot(page, "3-result-x4")

    # Drag the handle to a quarter of the viewer, then move it with the keyboard.
    viewer = page.locator("#viewer").bounding_box()
    handle = page.locator("#split").bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(viewer["x"] + viewer["width"] * 0.25, viewer["y"] + viewer["height"] / 2, steps=8)
    page.mouse.up()
    assert abs(split_value(page) - 25) <= 1
    page.locator("#split").focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    assert abs(split_value(page) - 40) <= 1
    page.keyboard.press("End")
    assert split_value(page) == 100
    page.keyboard.press("Home")
    assert split_value(page) == 0
    for _ in range(4):
        page.keyboard.press("PageUp")
    shot(page, "4-split-dragged")

    # 1:1, then zoom in on the viewer with the keyboard and pan by dragging.
    page.click("#zoom-1")
    assert page.locator("#zoom-level").inner_text() == "100 %"
    page.locator("#viewer").focus()
    page.keyboard.press("+")
    page.keyboard.press("+")
    assert page.locator("#zoom-level").inner_text() == "225 %"
    assert "pixelated" in page.locator("#after").get_attribute("class")
    before = page.locator("#after").evaluate("img => img.style.transform")
    page.mouse.move(viewer["x"] + viewer["width"] * 0.7, viewer["y"] + viewer["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(viewer["x"] + viewer["width"] * 0.8, viewer["y"] + viewer["height"] * 0.6, steps=5)
    page.mouse.up()
    assert page.locator("#after").evaluate("img => img.style.transform") != before
    shot(page, "5-zoomed")
    page.keyboard.press("0")
    assert page.locator("#zoom-level").inner_text().startswith("fit")
    assert log.console_errors == []


def test_geotiff_inputs_are_drawn_and_upscaled(opened: tuple[Any, PageLog], tmp_path: Path) -> None:
    page, log = opened
    choose(page, FLOAT_TIFF)
    info = page.locator("#file-info").inner_text()
    assert "300 × 300" in info and "4 bands float64" in info
    assert page.locator("#before").evaluate("img => img.naturalWidth") == 300
    assert upscale(page, 2) == (600, 600)  # a float GeoTIFF result is decoded and drawn too

    choose(page, GEOTIFF)
    assert "3 bands uint8" in page.locator("#file-info").inner_text()
    assert upscale(page, 2) == (512, 512)
    info = page.locator("#result-info").inner_text()
    saved = download(page, tmp_path)
    # A service that answers a GeoTIFF for a GeoTIFF (issue 7) gets it offered as .tif; an older one, PNG.
    assert saved.suffix == (".tif" if "image/tiff" in info else ".png")
    assert Image.open(io.BytesIO(saved.read_bytes())).size == (512, 512)
    shot(page, "6-geotiff")

    page.select_option("#format", "png")
    assert upscale(page, 2) == (512, 512)
    assert "image/png" in page.locator("#result-info").inner_text()
    assert download(page, tmp_path).suffix == ".png"
    assert log.console_errors == []


def test_raster_beyond_the_sync_limit_runs_as_a_job(opened: tuple[Any, PageLog], tmp_path: Path) -> None:
    page, log = opened
    choose(page, SCENE)
    page.select_option("#scale", "2")
    page.click("#run")
    seen: set[str] = set()
    while page.locator("#result-info").is_hidden() and page.locator("#error").is_hidden():
        status = page.locator("#status").inner_text()
        if re.search(r"tiles [1-9]", status) and not any(re.search(r"tiles [1-9]", text) for text in seen):
            page.wait_for_timeout(400)  # the bar's width transition
            shot(page, "7-job-progress")
        seen.add(status)
        page.wait_for_timeout(100)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    assert any(re.search(r"tiles \d+ / \d+", text) for text in seen), seen
    assert page.locator("#after").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [1536, 1536]
    info = page.locator("#result-info").inner_text()
    assert "image/tiff" in info and "EPSG:4326" in info and "Job" in info
    saved = download(page, tmp_path)
    assert saved.name == "scene_1_Sentinel-2_x2.tif" and Image.open(saved).size == (1536, 1536)
    assert log.console_errors == []


@requires_data("geotiff", "public", "image_north.tif")
def test_oversized_image_shows_the_413(opened: tuple[Any, PageLog]) -> None:
    page, log = opened
    choose(page, OVERSIZED)
    page.select_option("#scale", "2")
    page.click("#run")
    error = page.locator("#error")
    error.wait_for(timeout=RESULT_TIMEOUT_MS)
    text = error.inner_text()
    assert text.startswith("413") and "1,000,000" in text, text
    assert page.locator("#run").is_enabled() and page.locator("#after").get_attribute("src") is None
    assert page.locator("#download").get_attribute("aria-disabled") == "true"
    shot(page, "8-error-413")
    # The only console lines are Chromium's own notes of the refused requests.
    assert all(re.match(r"Failed to load resource: .* (404|413)", line) for line in log.console_errors), \
        log.console_errors


def test_not_an_image_gets_the_422_in_words(opened: tuple[Any, PageLog], tmp_path: Path) -> None:
    page, log = opened
    fake = tmp_path / "notes.png"
    fake.write_text("these are notes, not pixels")
    page.set_input_files("#file", str(fake))
    page.locator("#error", has_text="No preview").wait_for()
    assert page.locator("#run").is_enabled()  # the page cannot draw it; the service has the last word
    page.click("#run")
    page.locator("#error", has_text="422").wait_for()
    assert page.locator("#error").inner_text().startswith("422 · invalid image")
    assert all(re.match(r"Failed to load resource: .* 422", line) for line in log.console_errors), \
        log.console_errors


@pytest.mark.parametrize("opened", [PHONE], indirect=True)
def test_phone_sized_viewport(opened: tuple[Any, PageLog]) -> None:
    page, log = opened
    choose(page, PHOTO)
    assert upscale(page, 2) == (800, 800)
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    viewer = page.locator("#viewer").bounding_box()
    assert viewer["width"] <= 390 and viewer["height"] >= 300
    shot(page, "9-phone", full_page=True)
    assert log.console_errors == []


@pytest.mark.parametrize("opened", [{"viewport": DESKTOP}, PHONE], indirect=True)
def test_the_model_select_shows_its_whole_name_and_a_hint_for_it(opened: tuple[Any, PageLog]) -> None:
    page, log = opened
    fits = """() => {
        const select = document.getElementById("model");
        const text = document.createElement("canvas").getContext("2d");
        text.font = getComputedStyle(select).font;
        return [...select.options].every((o) => text.measureText(o.text).width + 28 <= select.clientWidth);
    }"""
    assert page.evaluate(fits)  # every option's text and the arrow fit the control
    hint = page.locator("#model-hint")
    assert "uncertainty map" in hint.inner_text()
    page.select_option("#model", "real")
    assert "sensor blur" in hint.inner_text()
    page.select_option("#model", "bicubic")
    assert "uncertainty map" in hint.inner_text()
    assert log.console_errors == []


# ---------------------------------------------------------------- the map view (map.js, vendored OpenLayers)
MAP_TIMEOUT_MS = 90_000
COORDINATES = re.compile(r"x (-?[\d.]+), y (-?[\d.]+) m \(EPSG:(\d+)\) · ([\d.]+)° ([NS]), ([\d.]+)° ([EW])")


def open_map(page: Any) -> list[float]:
    """Switch to the map, wait until OpenLayers has drawn it; the extent it placed the result at."""
    page.locator("#view-map:enabled").wait_for()
    page.click("#view-map")
    page.locator("#map[data-rendered=true]").wait_for(timeout=MAP_TIMEOUT_MS)
    assert page.locator("#viewer").is_hidden() and page.locator("#map-status").is_hidden()
    return json.loads(page.locator("#map").get_attribute("data-extent"))


def pointer_at_the_centre(page: Any) -> tuple[float, float, float, float]:
    """x, y (the raster's CRS) and longitude, latitude that the page reads out for the map's centre."""
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    found = COORDINATES.search(page.locator("#map-coords").inner_text())
    assert found, page.locator("#map-coords").inner_text()
    x, y, _, lat, ns, lon, ew = found.groups()
    return float(x), float(y), float(lon) * (1 if ew == "E" else -1), float(lat) * (1 if ns == "N" else -1)


def test_a_geotiff_result_on_the_map_where_it_lies(opened: tuple[Any, PageLog]) -> None:
    """SpaceNet's 4-band float raster in UTM 31N: the map is drawn in its CRS, the result's extent is the input's
    bounds, the pointer reads the right coordinates, and the swipe moves the line between input and result."""
    page, log = opened
    choose(page, FLOAT_TIFF)
    assert page.locator("#view-map").is_disabled()  # nothing to place before there is a result
    upscale(page, 2)
    extent = open_map(page)
    with rasterio.open(FLOAT_TIFF) as raster:
        assert extent == pytest.approx(list(raster.bounds), abs=0.01)
        crs = raster.crs
    assert page.locator("#map").get_attribute("data-projection") == "EPSG:32631"
    x, y, lon, lat = pointer_at_the_centre(page)
    centre = ((extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2)
    assert (x, y) == pytest.approx(centre, abs=2.0)  # within a few screen pixels of 0.5 m
    (expected_lon,), (expected_lat,) = warp_transform(crs, "EPSG:4326", [x], [y])
    assert (lon, lat) == pytest.approx((expected_lon, expected_lat), abs=2e-5)
    assert "Footprint (EPSG:32631) · 0.30 × 0.30 km" in page.locator("#map-footprint").inner_text()

    page.locator("#map-swipe").fill("20")
    clipped = "() => document.querySelector('canvas.hndsr-result, .hndsr-result canvas').style.clipPath"
    page.wait_for_function(f"{clipped} === 'inset(0px 0px 0px 20%)'")
    line, frame = page.locator("#map-swipe-line").bounding_box(), page.locator("#map").bounding_box()
    assert abs(line["x"] + 1 - (frame["x"] + frame["width"] * 0.2)) <= 2
    shot(page, "10-map")
    page.click("#view-compare")
    assert page.locator("#viewer").is_visible() and page.locator("#map-view").is_hidden()
    assert log.console_errors == []


@requires_data("geotiff", "public", "image_rgb.tif")
def test_a_job_result_on_the_map_read_by_http_ranges(opened: tuple[Any, PageLog], server: Server) -> None:
    """A public raster in Web Mercator past the synchronous limit: a scene job, whose COG the map reads by
    ranges (its overviews first) instead of downloading it whole."""
    page, log = opened
    ranges: list[tuple[str, str]] = []
    page.on("request", lambda r: ranges.append((r.url, r.headers["range"])) if "range" in r.headers else None)
    choose(page, PUBLIC_RGB)
    upscale(page, 2)
    job_id = page.locator("#result-info").inner_text().split("Job")[1].split()[0]
    extent = open_map(page)
    with rasterio.open(PUBLIC_RGB) as raster:
        assert extent == pytest.approx(list(raster.bounds), abs=0.01)
    x, y, lon, lat = pointer_at_the_centre(page)
    (expected_lon,), (expected_lat,) = warp_transform("EPSG:3857", "EPSG:4326", [x], [y])
    assert (lon, lat) == pytest.approx((expected_lon, expected_lat), abs=2e-5)
    result_url = f"{server.url}/jobs/{job_id}/result"
    size = int(httpx.head(result_url).headers["content-length"])
    read = [tuple(map(int, value.removeprefix("bytes=").split("-"))) for url, value in ranges if url == result_url]
    assert read and sum(last - first + 1 for first, last in read) < size, (read, size)
    shot(page, "11-map-job")
    assert log.console_errors == []


def test_a_failed_job_shows_as_the_job_failure(opened: tuple[Any, PageLog], tmp_path: Path) -> None:
    """A truncated PNG whose header says 800 x 800: past the synchronous limit, accepted as a job, which fails
    while decoding; the page says the job failed and why, not the poll's 200."""
    page, log = opened
    truncated = tmp_path / "truncated.png"
    image = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8)).save(image, "PNG")
    truncated.write_bytes(image.getvalue()[:60_000])
    page.set_input_files("#file", str(truncated))
    page.locator("#run:enabled").wait_for()
    page.select_option("#scale", "2")
    page.click("#run")
    page.locator("#error", has_text="Job failed").wait_for(timeout=RESULT_TIMEOUT_MS)
    text = page.locator("#error").inner_text()
    assert text.startswith("Job failed · invalid image") and "damaged or truncated" in text, text
    assert page.locator("#status").inner_text() == "The job failed."
    assert page.locator("#view-map").is_disabled()
