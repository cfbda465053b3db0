"""The ``hndsr upscale`` command on files and folders, as a user runs it."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from hndsr_client.cli import main
from tests.conftest import DATA, requires_data, rgb_image


def test_file_and_folder(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(rgb_image(20, 30)).save(src / "a.png")
    Image.fromarray(rgb_image(10, 10)).save(src / "sub" / "b.jpg")
    assert main(["upscale", str(src / "a.png"), str(tmp_path / "a_x3.png"), "--scale", "3"]) == 0
    assert Image.open(tmp_path / "a_x3.png").size == (90, 60)
    assert main(["upscale", str(src), str(tmp_path / "out"), "--scale", "2", "--ddim-steps", "2", "--seed", "1"]) == 0
    assert Image.open(tmp_path / "out" / "sub" / "b.png").size == (20, 20)


def test_bad_inputs_exit_nonzero(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_text("not an image")
    assert main(["upscale", str(tmp_path / "bad.png"), str(tmp_path / "o.png")]) == 1
    assert main(["upscale", str(tmp_path / "missing.png"), str(tmp_path / "o.png")]) == 2


@requires_data("geotiff")
def test_real_geotiff(tmp_path: Path) -> None:
    out = tmp_path / "landsat.png"
    assert main(["upscale", str(DATA / "geotiff" / "scene_1_Landsat-8.tif"), str(out), "--scale", "2"]) == 0
    assert Image.open(out).size == (512, 512)
