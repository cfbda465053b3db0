"""``hndsr batch``'s parts without a cluster or object storage: how SOURCEs resolve, what a product records, and
that the KubeRay RayJob runs a command the CLI accepts on the Ray version the batch image installs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from hndsr_batch.locations import gdal_options, gdal_path
from hndsr_batch.sources import Scene, Unusable, resolve
from hndsr_batch.stac import recorded_file
from hndsr_batch.work import BatchParameters, SceneStatus, new_row
from hndsr_client.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\x00")
    return path


def test_files_folders_and_globs_resolve_to_absolute_rasters(tmp_path: Path) -> None:
    a, b = touch(tmp_path / "in" / "a.tif"), touch(tmp_path / "in" / "sub" / "b.TIFF")
    touch(tmp_path / "in" / "notes.txt")
    folder = resolve([str(tmp_path / "in")])
    assert [s.href for s in folder] == [str(a), str(b)] and [s.stem for s in folder] == ["a", "b"]
    assert [s.href for s in resolve([str(tmp_path / "in" / "*.tif")])] == [str(a)]
    missing = resolve([str(tmp_path / "nothing.tif")])
    assert missing == [Unusable(str(tmp_path / "nothing.tif"), "no such file, or no .tif/.tiff in it")]


def test_a_second_input_with_the_same_output_name_fails_alone(tmp_path: Path) -> None:
    first, second = touch(tmp_path / "x" / "scene.tif"), touch(tmp_path / "y" / "scene.tif")
    found = resolve([str(first), str(second)])
    assert isinstance(found[0], Scene) and isinstance(found[1], Unusable)
    assert found[1].error == f"its output name 'scene' is already {first}'s"


def stac_item(item_id: str, assets: dict[str, dict]) -> dict:
    return {"type": "Feature", "stac_version": "1.1.0", "id": item_id, "geometry": None,
            "properties": {"datetime": "2024-05-01T10:30:00Z"}, "links": [], "assets": assets}


def test_stac_items_name_their_raster_by_asset(tmp_path: Path) -> None:
    tiff = "image/tiff; application=geotiff"
    collection = {"type": "FeatureCollection", "features": [
        stac_item("with visual", {"B02": {"href": "b02.tif", "type": tiff}, "visual": {"href": "tci.tif", "type": tiff}}),
        stac_item("bands only", {"thumb": {"href": "t.png", "type": "image/png"}, "B04": {"href": "b04.tif", "type": tiff}}),
        stac_item("no raster", {"meta": {"href": "m.xml", "type": "application/xml"}})]}
    path = tmp_path / "items.json"
    path.write_text(json.dumps(collection))
    visual, band, none = resolve([str(path)])
    assert visual.href == str(tmp_path / "tci.tif") and visual.stem == "with_visual"
    assert visual.datetime == "2024-05-01T10:30:00+00:00" and visual.derived_from == str(path)
    assert band.href == str(tmp_path / "b04.tif")
    assert isinstance(none, Unusable) and "has no GeoTIFF asset (its assets: meta)" in none.error
    chosen = resolve([str(path)], asset="B02")
    assert chosen[0].href == str(tmp_path / "b02.tif")
    assert "has no asset 'B02' (its assets: thumb, B04)" in chosen[1].error
    (tmp_path / "not-stac.json").write_text('{"type": "Collection"}')
    assert "not a STAC Item or ItemCollection" in resolve([str(tmp_path / "not-stac.json")])[0].error


def test_gdal_reads_where_the_data_is(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gdal_path("s3://bucket/a/b.tif") == "/vsis3/bucket/a/b.tif"
    assert gdal_path("https://host/c.tif?sig=1") == "/vsicurl/https://host/c.tif?sig=1"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert gdal_options() == {"AWS_S3_ENDPOINT": "127.0.0.1:9000", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}


def test_products_record_how_they_were_made() -> None:
    params = BatchParameters("s3://out/x", 4, (4, 3, 2), "real")
    assert params.names("scene") == ("scene_x4.tif", "scene_x4.json")
    assert params.recorded() == {"scale": 4, "bands": [4, 3, 2], "model": "real", "ddim_steps": 0, "seed": None,
                                 "consistency": True}
    item = {"assets": {"data": {"file:size": 12, "file:checksum": "1220" + "ab" * 32}}}
    assert recorded_file(item) == (12, "ab" * 32)
    assert recorded_file({"assets": {"data": {"file:size": 12}}}) is None
    assert new_row(Unusable("x.json", "why"))["status"] == SceneStatus.FAILED.value


def test_the_rayjob_runs_a_command_the_cli_accepts_on_the_images_ray() -> None:
    job = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "ray" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:3] == ["python", "-m", "hndsr_client.cli"]
    args = build_parser().parse_args(command[3:])
    assert args.command == "batch" and args.ray == "auto" and args.gpus_per_worker == 0.5
    dockerfile = (ROOT / "deploy" / "docker" / "batch.Dockerfile").read_text()
    assert re.search(r'"ray\[data\]==([\d.]+)"', dockerfile).group(1) == job["spec"]["rayClusterSpec"]["rayVersion"]
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"
