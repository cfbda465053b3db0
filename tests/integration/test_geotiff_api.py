"""GeoTIFF in, GeoTIFF out through the real server: format negotiation, bands, and bad rasters over HTTP."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile

from tests.helpers import encode, rgb_image
from tests.integration.server import Server, serving_in
from tests.rasters import NORTH_UP, UTM, smooth, upsample, write_raster

pytestmark = pytest.mark.integration

RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
# Deadlines long enough for a loaded CI machine: these tests are about formats, not time limits.
ENV = {"RATE_LIMIT_PER_HOUR": "1000", "REQUEST_TIMEOUT_S": "300"}


@pytest.fixture(scope="module")
def server(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_in(tmp_path_factory.mktemp("geotiff_api"), ENV) as srv:
        yield srv


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 16-bit single-band GeoTIFF with a nodata hole: 40 x 48 pixels of 10 m in UTM 31N."""
    data = smooth(40, 48, 1, seed=1, low=800, high=3000, dtype="uint16")
    data[0, 5:12, 6:14] = 0
    return write_raster(tmp_path_factory.mktemp("geotiff") / "pan.tif", data, nodata=0).read_bytes()


@pytest.fixture(scope="module")
def rgb_geotiff(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_raster(tmp_path_factory.mktemp("rgb") / "rgb.tif", smooth(32, 40, 3, seed=2),
                        colorinterp=RGB).read_bytes()


def post_upscale(server: Server, content: bytes, name: str = "scene.tif", media_type: str = "image/tiff",
                 headers: dict[str, str] | None = None, **fields: str) -> httpx.Response:
    return httpx.post(f"{server.url}/upscale", files={"image": (name, content, media_type)},
                      data={"scale_factor": "2", **fields}, headers=headers, timeout=300)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["error"] == code, body
    return body


def test_upscale_geotiff_returns_a_scaled_geotiff(server: Server, geotiff: bytes) -> None:
    response = post_upscale(server, geotiff)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/tiff"
    with MemoryFile(response.content) as mem, mem.open() as dst:
        assert dst.crs == UTM and dst.transform.almost_equals(NORTH_UP @ Affine.scale(0.5))
        assert (dst.width, dst.height, dst.count, dst.dtypes[0], dst.nodata) == (96, 80, 1, "uint16", 0)
        assert dst.tags()["HNDSR_SCALE"] == "2"
        valid = ~upsample(np.pad(np.ones((7, 8), bool), ((5, 28), (6, 34))), 2)
        assert ((dst.read(1) != 0) == valid).all()


def test_output_format_field_wins_over_accept(server: Server, geotiff: bytes) -> None:
    response = post_upscale(server, geotiff, headers={"accept": "image/tiff"}, output_format="png")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (96, 80)


def test_accept_header_picks_the_format(server: Server, geotiff: bytes) -> None:
    png = encode(rgb_image(24, 32))
    jpeg = post_upscale(server, png, name="a.png", media_type="image/png", headers={"accept": "image/jpeg"})
    assert jpeg.status_code == 200, jpeg.text
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:3] == b"\xff\xd8\xff"
    assert Image.open(io.BytesIO(jpeg.content)).size == (64, 48)
    # A GeoTIFF input asked for a quick-look gets one; with no preference a PNG input stays PNG.
    quicklook = post_upscale(server, geotiff, headers={"accept": "text/html, image/webp;q=0.9"})
    assert quicklook.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(quicklook.content)).size == (96, 80)
    plain = post_upscale(server, png, name="a.png", media_type="image/png")
    assert plain.headers["content-type"] == "image/png"


def test_accept_quality_values_are_honoured(server: Server) -> None:
    png = encode(rgb_image(16, 16))
    response = post_upscale(server, png, name="a.png", media_type="image/png",
                            headers={"accept": "image/png;q=0, image/jpeg;q=0.8"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"


def test_infer_with_a_base64_geotiff(server: Server, rgb_geotiff: bytes) -> None:
    response = httpx.post(f"{server.url}/infer", json={"image": base64.b64encode(rgb_geotiff).decode(),
                                                       "scale_factor": 3}, timeout=300)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media_type"] == "image/tiff" and (body["width"], body["height"]) == (120, 96)
    with MemoryFile(base64.b64decode(body["image"])) as mem, mem.open() as dst:
        assert dst.crs == UTM and dst.transform.almost_equals(NORTH_UP @ Affine.scale(1 / 3))
        assert dst.count == 3 and dst.colorinterp == RGB and (dst.width, dst.height) == (120, 96)


def test_bands_select_and_order_over_http(server: Server, rgb_geotiff: bytes) -> None:
    response = post_upscale(server, rgb_geotiff, bands="3,1")
    assert response.status_code == 200, response.text
    with MemoryFile(response.content) as mem, mem.open() as dst:
        assert dst.count == 2 and dst.colorinterp == (ColorInterp.blue, ColorInterp.red)
        assert dst.tags()["HNDSR_SOURCE_BANDS"] == "3,1"


def test_bands_on_a_png_select_its_channels(server: Server) -> None:
    """A PNG is a 3-band raster: /upscale and /infer select its bands as /jobs always did (the schema allows
    bands for any image; only a band the file lacks is refused)."""
    image = rgb_image(16, 16)
    png = encode(image)
    blue = post_upscale(server, png, name="a.png", media_type="image/png", bands="3", output_format="tiff")
    assert blue.status_code == 200, blue.text
    with MemoryFile(blue.content) as mem, mem.open() as dst:
        assert dst.count == 1 and (dst.width, dst.height) == (32, 32)
        assert dst.tags()["HNDSR_SOURCE_BANDS"] == "3"
    infer = httpx.post(f"{server.url}/infer", json={"image": base64.b64encode(png).decode(), "bands": "2,1"},
                       timeout=60)
    assert infer.status_code == 200 and infer.json()["media_type"] == "image/png", infer.text
    body = assert_error(post_upscale(server, png, name="a.png", media_type="image/png", bands="4"), 422,
                        "invalid_image")
    assert "band 4" in body["detail"]


@pytest.mark.parametrize("bands", ["0", "a,b", "1,1", "2,,3", "-1", "4;3"])
def test_bad_bands_are_refused(server: Server, rgb_geotiff: bytes, bands: str) -> None:
    assert_error(post_upscale(server, rgb_geotiff, bands=bands), 422)


def test_band_out_of_range_is_refused(server: Server, rgb_geotiff: bytes) -> None:
    body = assert_error(post_upscale(server, rgb_geotiff, bands="4,3,2"), 422)
    assert "band 4" in body["detail"]


def test_bad_rasters_get_their_designed_statuses(server: Server, tmp_path: Path, geotiff: bytes) -> None:
    huge = tmp_path / "huge.tif"
    with rasterio.open(huge, "w", driver="GTiff", width=100_000, height=100_000, count=1, dtype="uint8",
                       tiled=True, sparse_ok=True):
        pass
    assert_error(post_upscale(server, huge.read_bytes()), 413, "image_too_large")
    many = io.BytesIO()
    tifffile.imwrite(many, np.zeros((2, 2, 10_000), np.uint8), photometric="minisblack", planarconfig="contig")
    assert "10,000 bands" in assert_error(post_upscale(server, many.getvalue()), 413, "image_too_large")["detail"]
    assert_error(post_upscale(server, geotiff[: len(geotiff) // 2]), 422, "invalid_image")
    palette = write_raster(tmp_path / "classes.tif", (smooth(16, 16) // 64).astype(np.uint8))
    with rasterio.open(palette, "r+") as dst:
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255)})
    assert_error(post_upscale(server, palette.read_bytes()), 422, "invalid_image")
    complex_tif = write_raster(tmp_path / "complex.tif", np.ones((1, 8, 8), np.complex64))
    assert_error(post_upscale(server, complex_tif.read_bytes()), 422, "invalid_image")
    # The service is still answering after all of them.
    assert post_upscale(server, geotiff).status_code == 200
