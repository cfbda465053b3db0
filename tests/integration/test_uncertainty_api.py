"""The uncertainty map through the real server: /infer's own TIFF, /upscale's last band, a job's last band, and
the refusals (a format that cannot carry it, samples out of range, weights without an uncertainty head)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.windows import Window

from hndsr_model.weights import DEFAULT_WEIGHTS
from tests.helpers import DATA, encode, rgb_image
from tests.integration.server import Server, serving_in

pytestmark = pytest.mark.integration

ENV = {"RATE_LIMIT_PER_HOUR": "1000", "REQUEST_TIMEOUT_S": "300", "TILE_SIZE": "32", "TILE_OVERLAP": "8"}
REAL = DATA / "geotiff" / "spacenet_sample_uint16.tif"
V1_WEIGHTS = DEFAULT_WEIGHTS.with_name("hndsr-1.0.0.safetensors")


@pytest.fixture(scope="module")
def server(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_in(tmp_path_factory.mktemp("uncertainty_api"), ENV) as srv:
        yield srv


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 40 x 48 crop of a real 16-bit GeoTIFF (its CRS and its windowed transform), with a nodata hole."""
    if not REAL.exists():
        pytest.skip(f"{REAL} not present")
    path = tmp_path_factory.mktemp("geotiff") / "crop.tif"
    with rasterio.open(REAL) as src:
        window = Window(200, 300, 48, 40)
        data = src.read(window=window)
        profile = src.profile
        profile.update(width=48, height=40, transform=src.window_transform(window), nodata=0, tiled=False)
    data[:, 4:10, 6:12] = 0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path.read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def infer(server: Server, image: bytes, **fields: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/infer", json={"image": b64(image), "scale_factor": 2, **fields}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def upscale(server: Server, content: bytes, name: str = "crop.tif", media_type: str = "image/tiff",
            **fields: str) -> httpx.Response:
    return httpx.post(f"{server.url}/upscale", files={"image": (name, content, media_type)},
                      data={"scale_factor": "2", **fields}, timeout=300)


def assert_invalid(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request", body
    assert all(word in body["detail"] for word in words), body


def read_map(blob: bytes) -> tuple[np.ndarray, Any]:
    """The one band of an uncertainty TIFF, and its dataset's description (crs, transform, nodata)."""
    with MemoryFile(blob) as mem, mem.open() as ds:
        assert ds.count == 1 and ds.dtypes == ("float32",) and ds.descriptions == ("uncertainty",)
        return ds.read(1), (ds.crs, ds.transform, ds.nodata)


def test_infer_returns_the_map_only_when_asked(server: Server) -> None:
    png = encode(rgb_image(24, 40))
    plain = infer(server, png)
    assert "uncertainty" not in plain
    body = infer(server, png, return_uncertainty=True)
    assert body["image"] == plain["image"]  # the image's bytes do not change with the map
    sigma, _ = read_map(base64.b64decode(body["uncertainty"]))
    assert sigma.shape == (body["height"], body["width"]) == (48, 80)
    assert np.isfinite(sigma).all() and (sigma > 0).all() and sigma.max() < 1


def test_infer_map_with_diffusion_is_deterministic_for_a_seed(server: Server) -> None:
    png = encode(rgb_image(16, 16, seed=3))
    fields = {"ddim_steps": 2, "seed": 7}
    first = infer(server, png, return_uncertainty=True, uncertainty_samples=3, **fields)
    again = infer(server, png, return_uncertainty=True, uncertainty_samples=3, **fields)
    assert first["uncertainty"] == again["uncertainty"]
    assert first["image"] == infer(server, png, **fields)["image"]
    other = infer(server, png, return_uncertainty=True, uncertainty_samples=4, **fields)
    assert other["image"] == first["image"] and other["uncertainty"] != first["uncertainty"]


def test_infer_map_of_a_geotiff_is_georeferenced(server: Server, geotiff: bytes) -> None:
    plain = infer(server, geotiff)
    body = infer(server, geotiff, return_uncertainty=True)
    assert body["image"] == plain["image"]
    sigma, (crs, transform, nodata) = read_map(base64.b64decode(body["uncertainty"]))
    with MemoryFile(base64.b64decode(body["image"])) as mem, mem.open() as product:
        assert (crs, transform, nodata) == (product.crs, product.transform, product.nodata)
        assert ((sigma == 0) == (product.read(1) == 0)).all()  # nodata where the image's is


def test_upscale_geotiff_gets_a_last_uncertainty_band(server: Server, geotiff: bytes) -> None:
    plain = upscale(server, geotiff)
    asked = upscale(server, geotiff, return_uncertainty="true")
    assert plain.status_code == asked.status_code == 200, asked.text
    assert asked.headers["content-type"] == "image/tiff"
    with MemoryFile(plain.content) as a, a.open() as before, MemoryFile(asked.content) as b, b.open() as after:
        assert after.count == before.count + 1 and after.dtypes == ("float32",) * after.count
        assert after.descriptions[-1] == "uncertainty"
        assert after.crs == before.crs and after.transform == before.transform and after.nodata == before.nodata
        with MemoryFile(geotiff) as c, c.open() as source:
            assert after.transform == source.transform @ Affine.scale(0.5) and after.crs == source.crs
        image = before.read(1)
        assert np.array_equal(after.read(1), image.astype(np.float32))  # the image's values in its own units
        sigma = after.read(after.count)
        assert ((sigma == 0) == (image == 0)).all() and (sigma[image != 0] > 0).all()


def test_upscale_png_to_tiff_gets_the_band(server: Server) -> None:
    image = rgb_image(16, 24)
    response = upscale(server, encode(image), "a.png", "image/png", return_uncertainty="true", output_format="tiff")
    assert response.status_code == 200, response.text
    with MemoryFile(response.content) as mem, mem.open() as ds:
        assert (ds.count, ds.width, ds.height, ds.dtypes[0]) == (4, 48, 32, "float32")
        assert ds.descriptions[-1] == "uncertainty"
        rgb = ds.read((1, 2, 3))
        assert rgb.min() >= 0 and rgb.max() <= 255 and np.array_equal(rgb, np.rint(rgb))


@pytest.mark.parametrize("fields", [{}, {"output_format": "jpeg"}, {"output_format": "webp"}])
def test_upscale_formats_that_cannot_carry_the_map_are_refused(server: Server, fields: dict[str, str]) -> None:
    response = upscale(server, encode(rgb_image(8, 8)), "a.png", "image/png", return_uncertainty="true", **fields)
    assert_invalid(response, "TIFF", "/infer")


def test_geotiff_quicklook_with_the_map_is_refused(server: Server, geotiff: bytes) -> None:
    assert_invalid(httpx.post(f"{server.url}/upscale", files={"image": ("a.tif", geotiff, "image/tiff")},
                              data={"scale_factor": "2", "return_uncertainty": "true"},
                              headers={"accept": "image/png"}, timeout=60), "TIFF")


@pytest.mark.parametrize("samples", [1, 17])
def test_samples_out_of_range_are_refused_naming_the_field(server: Server, samples: int) -> None:
    image = encode(rgb_image(8, 8))
    fields = {"return_uncertainty": True, "uncertainty_samples": samples}
    assert_invalid(httpx.post(f"{server.url}/infer", json={"image": b64(image), **fields}, timeout=60),
                   "uncertainty_samples")
    form = {"return_uncertainty": "true", "uncertainty_samples": str(samples)}
    for path in ("/upscale", "/jobs"):
        assert_invalid(httpx.post(f"{server.url}{path}", files={"image": ("a.png", image, "image/png")}, data=form,
                                  timeout=60), "uncertainty_samples")


def test_job_result_gets_the_band(server: Server, geotiff: bytes) -> None:
    submitted = httpx.post(f"{server.url}/jobs", files={"image": ("crop.tif", geotiff, "image/tiff")},
                           data={"scale_factor": "2", "return_uncertainty": "true", "uncertainty_samples": "2",
                                 "ddim_steps": "1", "seed": "3"}, timeout=60)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    deadline = time.monotonic() + 240
    while (job := httpx.get(f"{server.url}/jobs/{job_id}", timeout=30).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "succeeded", job
    assert job["output"]["uncertainty_band"] == job["output"]["bands"] == 2 and job["output"]["dtype"] == "float32"
    result = httpx.get(f"{server.url}/jobs/{job_id}/result", timeout=60)
    synchronous = upscale(server, geotiff, return_uncertainty="true", uncertainty_samples="2", ddim_steps="1", seed="3")
    with MemoryFile(result.content) as mem, mem.open() as ds:
        assert ds.count == 2 and ds.descriptions[-1] == "uncertainty" and ds.tags()["HNDSR_UNCERTAINTY_SAMPLES"] == "2"
    assert result.content == synchronous.content  # a job's product is the synchronous one


def test_weights_without_a_head_refuse_the_map(bentoml_home: Path, tmp_path: Path) -> None:
    image = encode(rgb_image(8, 8))
    with serving_in(tmp_path, {**ENV, "WEIGHTS_PATH": str(V1_WEIGHTS)}) as v1:
        refused = [httpx.post(f"{v1.url}/infer", json={"image": b64(image), "return_uncertainty": True}, timeout=60),
                   *(httpx.post(f"{v1.url}{path}", files={"image": ("a.png", image, "image/png")},
                                data={"return_uncertainty": "true", "output_format": "tiff"}, timeout=60)
                     for path in ("/upscale", "/jobs"))]
        plain = httpx.post(f"{v1.url}/infer", json={"image": b64(image)}, timeout=60)
    for response in refused:
        assert_invalid(response, "uncertainty head", "1.0.0")
    assert plain.status_code == 200 and "uncertainty" not in plain.json()
