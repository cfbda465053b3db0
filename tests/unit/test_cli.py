"""The ``hndsr upscale`` command on files and folders, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from hndsr_client.cli import main
from hndsr_client.client import HNDSRError, JobsClient
from hndsr_model.weights import DEFAULT_WEIGHTS, VARIANT_FILES, WEIGHTS_DIR
from tests.helpers import DATA, requires_data, rgb_image


def test_file_and_folder(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(rgb_image(20, 30)).save(src / "a.png")
    Image.fromarray(rgb_image(10, 10)).save(src / "sub" / "b.jpg")
    assert main(["upscale", str(src / "a.png"), str(tmp_path / "a_x3.png"), "--scale", "3"]) == 0
    assert Image.open(tmp_path / "a_x3.png").size == (90, 60)
    assert main(["upscale", str(src), str(tmp_path / "out"), "--scale", "2", "--ddim-steps", "2", "--seed", "1"]) == 0
    assert Image.open(tmp_path / "out" / "sub" / "b.png").size == (20, 20)


def test_model_picks_the_shipped_weights(tmp_path: Path) -> None:
    Image.fromarray(rgb_image(16, 16)).save(tmp_path / "a.png")
    outputs = {}
    for name, options in {"default": [], "real": ["--model", "real"],
                          "real-file": ["--weights", str(WEIGHTS_DIR / VARIANT_FILES["real"])]}.items():
        assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path / f"{name}.png"), "--scale", "2", *options]) == 0
        outputs[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    assert (outputs["real"] == outputs["real-file"]).all() and (outputs["real"] != outputs["default"]).any()
    with pytest.raises(SystemExit):
        main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "o.png"), "--model", "sharp"])


def test_bad_inputs_exit_nonzero(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_text("not an image")
    assert main(["upscale", str(tmp_path / "bad.png"), str(tmp_path / "o.png")]) == 1
    assert main(["upscale", str(tmp_path / "missing.png"), str(tmp_path / "o.png")]) == 2


@requires_data("geotiff")
def test_real_geotiff(tmp_path: Path) -> None:
    out = tmp_path / "landsat.png"
    assert main(["upscale", str(DATA / "geotiff" / "scene_1_Landsat-8.tif"), str(out), "--scale", "2"]) == 0
    assert Image.open(out).size == (512, 512)


def write_geotiff(path: Path, bands: int = 4, size: int = 40) -> None:
    """A small georeferenced uint16 raster with a nodata corner."""
    data = (rgb_image(size, size)[..., :1].astype(np.uint16) * 40 + 1).repeat(bands, axis=2).transpose(2, 0, 1)
    data[:, :4, :4] = 0
    profile = {"driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": "uint16", "nodata": 0,
               "crs": "EPSG:32631", "transform": Affine(10, 0, 500_000, 0, -10, 5_000_000)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_geotiff_keeps_georeferencing_and_selects_bands(tmp_path: Path) -> None:
    src, out = tmp_path / "scene.tif", tmp_path / "scene_x2.tif"
    write_geotiff(src)
    assert main(["upscale", str(src), str(out), "--scale", "2", "--bands", "3,1"]) == 0
    with rasterio.open(src) as before, rasterio.open(out) as after:
        assert after.count == 2 and after.dtypes == ("uint16", "uint16") and after.nodata == 0
        assert after.crs == before.crs and after.bounds == before.bounds
        assert after.transform == before.transform * Affine.scale(0.5)
        assert after.tags()["HNDSR_SOURCE_BANDS"] == "3,1"
        assert (after.read(1)[:8, :8] == 0).all() and (after.read(1)[8:, 8:] > 0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif", "scene_x2.tif"]  # no working files left


def test_bad_band_selection_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_geotiff(tmp_path / "scene.tif", bands=2)
    assert main(["upscale", str(tmp_path / "scene.tif"), str(tmp_path / "o.tif"), "--bands", "5"]) == 1
    assert "asks for band 5" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()
    with pytest.raises(SystemExit):
        main(["upscale", str(tmp_path / "scene.tif"), str(tmp_path / "o.tif"), "--bands", "0,1"])


def test_uncertainty_is_written_beside_the_output(tmp_path: Path) -> None:
    """--uncertainty leaves the output's bytes alone and writes <stem>.uncertainty.tif beside it: one float32
    band of the output's size, georeferenced like a georeferenced output."""
    Image.fromarray(rgb_image(12, 20)).save(tmp_path / "a.png")
    write_geotiff(tmp_path / "scene.tif", bands=3, size=24)
    diffusion = ["--scale", "2", "--ddim-steps", "1", "--seed", "0"]
    assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "plain.png"), "--scale", "2"]) == 0
    assert main(["upscale", str(tmp_path / "scene.tif"), str(tmp_path / "plain.tif"), *diffusion]) == 0
    assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "a_x2.png"), "--scale", "2", "--uncertainty"]) == 0
    assert main(["upscale", str(tmp_path / "scene.tif"), str(tmp_path / "scene_x2.tif"), *diffusion,
                 "--uncertainty", "--uncertainty-samples", "2"]) == 0
    assert (tmp_path / "a_x2.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    assert (tmp_path / "scene_x2.tif").read_bytes() == (tmp_path / "plain.tif").read_bytes()
    with rasterio.open(tmp_path / "a_x2.uncertainty.tif") as sigma:
        assert (sigma.count, sigma.dtypes[0], sigma.width, sigma.height, sigma.crs) == (1, "float32", 40, 24, None)
        assert sigma.descriptions == ("uncertainty",) and (sigma.read(1) > 0).all()
    with rasterio.open(tmp_path / "scene_x2.tif") as out, rasterio.open(tmp_path / "scene_x2.uncertainty.tif") as sigma:
        assert out.count == 3 and out.dtypes[0] == "uint16"
        assert (sigma.count, sigma.dtypes[0], sigma.shape) == (1, "float32", out.shape)
        assert sigma.crs == out.crs and sigma.transform == out.transform and sigma.nodata == out.nodata == 0
        assert ((sigma.read(1) == 0) == (out.read(1) == 0)).all()  # nodata where the output's is
        assert sigma.tags()["HNDSR_UNCERTAINTY_SAMPLES"] == "2"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no working files left


def test_uncertainty_needs_weights_with_a_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(rgb_image(8, 8)).save(tmp_path / "a.png")
    v1 = DEFAULT_WEIGHTS.with_name("hndsr-1.0.0.safetensors")
    assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "o.png"), "--uncertainty", "--weights", str(v1)]) == 1
    assert "no uncertainty head" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
    with pytest.raises(SystemExit):
        main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "o.png"), "--uncertainty", "--uncertainty-samples", "17"])


def test_waiting_rides_out_a_service_that_cannot_answer_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet's database restart (503 + Retry-After) or a replica going away is not the job's failure."""
    answers = iter([httpx.Response(503, headers={"retry-after": "0"}, json={"error": "jobs_database_unavailable"}),
                    httpx.ConnectError("replica gone"),
                    httpx.Response(200, json={"status": "running", "progress": {"tiles_done": 1, "tiles_total": 2}}),
                    httpx.Response(200, json={"status": "succeeded", "progress": {"tiles_done": 2, "tiles_total": 2}})])

    def answer(request: httpx.Request) -> httpx.Response:
        reply = next(answers)
        if isinstance(reply, Exception):
            raise reply
        return reply

    client = JobsClient("http://hndsr.test")
    client.http = httpx.Client(base_url="http://hndsr.test", transport=httpx.MockTransport(answer))
    assert client.wait("0" * 32, poll_s=0)["status"] == "succeeded"
    failing = iter([httpx.Response(404, json={"error": "job_not_found", "detail": "no job"})])
    client.http = httpx.Client(base_url="http://hndsr.test", transport=httpx.MockTransport(lambda _: next(failing)))
    with pytest.raises(HNDSRError, match="job_not_found"):
        client.wait("0" * 32, poll_s=0)


def test_help_and_version_start_without_the_model() -> None:
    """--help and --version answer at once: neither PyTorch nor rasterio is imported for them."""
    probe = ("import sys; from hndsr_client.cli import build_parser; build_parser().format_help(); "
             "print(sorted(m for m in ('torch', 'rasterio') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"
    shown = subprocess.run([sys.executable, "-m", "hndsr_client.cli", "--version"], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.startswith("hndsr ") and "bicubic 2." in shown.stdout
    options = subprocess.run([sys.executable, "-m", "hndsr_client.cli", "submit", "--help"], capture_output=True,
                             text=True).stdout
    for option in ("--scale 2..8", "--uncertainty ", "--delete-after", "--url URL"):
        assert option in options
    assert "(default: 4)" in options and "(default: http://127.0.0.1:8000)" in options


def test_every_written_file_gets_a_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(rgb_image(12, 12)).save(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").write_text("not an image")
    assert main(["upscale", str(tmp_path / "in" / "a.png"), str(tmp_path / "a.png"), "--scale", "2",
                 "--uncertainty"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {tmp_path / 'a.png'}",
                                                    f"wrote {tmp_path / 'a.uncertainty.tif'}"]
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--scale", "2"]) == 1
    shown = capsys.readouterr()
    assert f"wrote {tmp_path / 'out' / 'a.png'}" in shown.out and "wrote 1 of 2 images" in shown.out
    assert f"skipped {tmp_path / 'in' / 'b.png'}" in shown.err


def test_an_unreachable_service_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_geotiff(tmp_path / "scene.tif", bands=3)
    assert main(["submit", str(tmp_path / "scene.tif"), str(tmp_path / "o.tif"), "--url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the HNDSR service at http://127.0.0.1:9") and err.count("\n") == 1


def test_a_result_downloaded_but_not_deleted_is_still_a_success(tmp_path: Path) -> None:
    """The deletion after a download is the service's housekeeping: its failure is a warning, not an error."""
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(503, json={"error": "storage_unavailable", "detail": "retry shortly"})
        return httpx.Response(200, content=b"II*\x00result")

    client = JobsClient("http://hndsr.test")
    client.http = httpx.Client(base_url="http://hndsr.test", transport=httpx.MockTransport(answer))
    with pytest.warns(UserWarning, match="not deleted"):
        assert client.download("0" * 32, tmp_path / "r.tif", delete_after=True).read_bytes() == b"II*\x00result"
