"""``hndsr submit`` and the Python jobs client against the real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
from affine import Affine

from hndsr_client import HNDSRError, JobsClient
from hndsr_client.cli import main
from hndsr_model.weights import VARIANT_FILES, WEIGHTS_DIR, load_weights
from tests.integration.server import Server, serving_in
from tests.unit.test_cli import write_geotiff

pytestmark = pytest.mark.integration
KEY = "submit-test-key-0123456789"


@pytest.fixture(scope="module")
def server(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_in(tmp_path_factory.mktemp("submit"), {"API_KEYS": KEY}) as server:
        yield server


def test_submit_downloads_a_georeferenced_result(server: Server, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "scene.tif", tmp_path / "scene_x2.tif"
    write_geotiff(src, bands=3)
    assert main(["submit", str(src), str(out), "--url", server.url, "--scale", "2", "--api-key", KEY,
                 "--uncertainty"]) == 0
    with rasterio.open(src) as before, rasterio.open(out) as after:
        assert after.transform == before.transform * Affine.scale(0.5) and after.crs == before.crs
        assert (after.count, after.dtypes[0], after.nodata) == (4, "float32", 0)
        assert after.descriptions[-1] == "uncertainty"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif", "scene_x2.tif"]
    shown = capsys.readouterr()
    assert f"wrote {out} (band 4: the uncertainty map)" in shown.out
    job_id = shown.err.split()[1]  # "job <id> queued on <url>"
    with JobsClient(server.url, api_key=KEY) as client, pytest.raises(HNDSRError) as gone:
        client.status(job_id)  # deleted once downloaded (--delete-after, the default)
    assert gone.value.status == 410


def test_submit_with_the_real_model_and_without_the_projection(server: Server, tmp_path: Path) -> None:
    src, out = tmp_path / "scene.tif", tmp_path / "scene_x2.tif"
    write_geotiff(src, bands=3)
    assert main(["submit", str(src), str(out), "--url", server.url, "--scale", "2", "--model", "real",
                 "--no-consistency", "--api-key", KEY]) == 0
    with rasterio.open(out) as after:
        assert after.tags()["HNDSR_MODEL_VERSION"] == load_weights(WEIGHTS_DIR / VARIANT_FILES["real"]).version
        assert after.tags()["HNDSR_CONSISTENCY"] == "false"
    with JobsClient(server.url, api_key=KEY) as client:
        job_id = client.submit(src, scale=2, model="real")
        output = client.status(job_id)["output"]
        assert (output["model_variant"], output["consistency"]) == ("real", True)
        client.cancel(job_id)


def test_client_reports_the_services_errors(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    src = tmp_path / "scene.tif"
    write_geotiff(src, bands=2)
    assert main(["submit", str(src), str(tmp_path / "o.tif"), "--url", server.url]) == 1
    assert "401 unauthorized" in capsys.readouterr().err
    with JobsClient(server.url, api_key=KEY) as client:
        with pytest.raises(HNDSRError) as refused:
            client.submit(src, bands=(3,))
        assert refused.value.status == 422 and "asks for band 3" in refused.value.detail
        with pytest.raises(HNDSRError) as missing:
            client.status("0" * 32)
        assert missing.value.status == 404
    assert not (tmp_path / "o.tif").exists()
