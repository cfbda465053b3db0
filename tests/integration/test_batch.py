"""``hndsr batch`` for real: public GeoTIFFs in an S3 API server (moto's), products back into it, in process and on
a Ray cluster of three nodes on this machine, one of which is killed mid-run.

Every product must be a valid COG with the input's CRS, bounds, dtype, bands and nodata, described by a STAC
Item that pystac loads and whose geometry and transform agree with the COG; nothing partial may ever be visible.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds

from hndsr_service.local_fleet import BUCKET, S3Server, running_s3_server
from tests.helpers import DATA, requires_data

pytest.importorskip("pystac", reason="hndsr batch needs the extra: pip install -e '.[ray]'")
pytest.importorskip("rio_stac", reason="hndsr batch needs the extra: pip install -e '.[ray]'")
pytestmark = [pytest.mark.integration, requires_data("geotiff", "public")]

HNDSR = str(Path(sys.executable).with_name("hndsr"))
# 8-bit RGB (Web Mercator), 16-bit with nodata (a custom Albers CRS), 4 bands of float64 (UTM), RGBA with nodata.
INPUTS = {"image_rgb.tif": DATA / "geotiff" / "public" / "image_rgb.tif",
          "image_nodata.tif": DATA / "geotiff" / "public" / "image_nodata.tif",
          "spacenet_ms1.tif": DATA / "geotiff" / "spacenet_ms1_4band_float64.tif",
          "image_rgba_nodata.tif": DATA / "geotiff" / "public" / "image_rgba_nodata.tif"}
SCALE = 2


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    folder = tmp_path_factory.mktemp("batch-s3")
    with running_s3_server(folder / "s3.log") as server:
        client = server.client()
        for name, path in INPUTS.items():
            client.upload_file(str(path), BUCKET, f"scenes/{name}")
        client.put_object(Bucket=BUCKET, Key="scenes/zz_corrupt.tif", Body=INPUTS["image_rgb.tif"].read_bytes()[:5000])
        yield server


def batch(s3: S3Server, *args: str, **popen: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HNDSR, "batch", *args], env={**os.environ, **s3.env}, capture_output=True, text=True,
                          timeout=900, **popen)


def report(s3: S3Server, prefix: str) -> dict:
    return json.loads(s3.client().get_object(Bucket=BUCKET, Key=f"{prefix}/batch.json")["Body"].read())


def statuses(s3: S3Server, prefix: str) -> dict[str, str]:
    return {Path(scene["source"]).name: scene["status"] for scene in report(s3, prefix)["scenes"]}


def download(s3: S3Server, key: str, folder: Path) -> Path:
    path = folder / Path(key).name
    s3.client().download_file(BUCKET, key, str(path))
    return path


def check_products(s3: S3Server, prefix: str, folder: Path) -> dict[str, Path]:
    """Every good input's COG and item under ``prefix``, checked against its input; nothing else there."""
    import pystac
    from rio_cogeo.cogeo import cog_validate

    products = {}
    for name, source in INPUTS.items():
        stem = Path(name).stem
        cog = download(s3, f"{prefix}/{stem}_x{SCALE}.tif", folder)
        item = pystac.Item.from_file(str(download(s3, f"{prefix}/{stem}_x{SCALE}.json", folder)))
        valid, errors, _ = cog_validate(str(cog), quiet=True)
        assert valid, (name, errors)
        with rasterio.open(source) as src, rasterio.open(cog) as out:
            assert out.crs == src.crs and out.bounds == pytest.approx(src.bounds)
            assert (out.width, out.height) == (src.width * SCALE, src.height * SCALE)
            assert out.dtypes == src.dtypes and out.count == src.count and out.nodata == src.nodata
            assert item.properties["proj:shape"] == [out.height, out.width]
            assert item.properties["proj:transform"][:6] == pytest.approx(list(out.transform)[:6])
            assert item.bbox == pytest.approx(list(transform_bounds(out.crs, "EPSG:4326", *out.bounds,
                                                                    densify_pts=21)), abs=1e-6)
            assert item.properties.get("proj:code") == (f"EPSG:{src.crs.to_epsg()}" if src.crs.to_epsg() else None)
        asset = item.assets["data"]
        assert asset.href == f"s3://{BUCKET}/{prefix}/{stem}_x{SCALE}.tif"
        assert asset.media_type == "image/tiff; application=geotiff; profile=cloud-optimized"
        assert asset.extra_fields["file:size"] == cog.stat().st_size
        assert item.properties["hndsr:parameters"]["scale"] == SCALE
        assert "hndsr" in item.properties["processing:software"]
        assert f"x{SCALE}" in item.properties["processing:lineage"]
        assert [link.href for link in item.links if link.rel == "derived_from"] == [f"s3://{BUCKET}/scenes/{name}"]
        products[name] = cog
    names = {key.removeprefix(f"{prefix}/") for key in s3.keys(f"{prefix}/")}
    expected = {f"{Path(n).stem}_x{SCALE}.{ext}" for n in INPUTS for ext in ("tif", "json")} | {"batch.json"}
    assert names == expected  # no working file, no partial object, nothing for the corrupt input
    return products


@pytest.fixture(scope="module")
def in_process(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The in-process products of every input: object storage to object storage."""
    done = batch(s3, f"s3://{BUCKET}/scenes/*.tif", "--output", f"s3://{BUCKET}/local", "--scale", str(SCALE))
    assert done.returncode == 1, done.stderr  # the corrupt input fails, alone
    return check_products(s3, "local", tmp_path_factory.mktemp("local-products"))


def test_in_process_object_storage_to_object_storage(s3: S3Server, in_process: dict[str, Path]) -> None:
    assert statuses(s3, "local") == {**dict.fromkeys(INPUTS, "succeeded"), "zz_corrupt.tif": "failed"}
    failed = [scene for scene in report(s3, "local")["scenes"] if scene["status"] == "failed"][0]
    assert failed["error"].startswith(f"cannot read s3://{BUCKET}/scenes/zz_corrupt.tif:") and failed["cog"] is None
    assert report(s3, "local")["counts"] == {"succeeded": len(INPUTS), "failed": 1}


def test_a_second_run_skips_what_is_done_and_redoes_the_rest(s3: S3Server, in_process: dict[str, Path]) -> None:
    s3.client().delete_object(Bucket=BUCKET, Key="local/image_rgb_x2.tif")  # lost since: made again
    again = batch(s3, f"s3://{BUCKET}/scenes/*.tif", "--output", f"s3://{BUCKET}/local", "--scale", str(SCALE))
    assert again.returncode == 1
    assert statuses(s3, "local") == {**dict.fromkeys(INPUTS, "skipped"), "image_rgb.tif": "succeeded",
                                     "zz_corrupt.tif": "failed"}
    other_scale = batch(s3, f"s3://{BUCKET}/scenes/image_rgb.tif", "--output", f"s3://{BUCKET}/local", "--scale", "3")
    assert other_scale.returncode == 0 and statuses(s3, "local") == {"image_rgb.tif": "succeeded"}


def test_stac_item_collection_and_url_inputs(s3: S3Server, tmp_path: Path) -> None:
    """An ItemCollection whose items name their rasters by asset (one has none) and a presigned https-style URL."""
    import pystac

    def item(item_id: str, assets: dict[str, pystac.Asset]) -> pystac.Item:
        made = pystac.Item(item_id, None, None, pystac.utils.str_to_datetime("2024-05-01T10:30:00Z"), {})
        for key, asset in assets.items():
            made.add_asset(key, asset)
        return made

    tiff = pystac.MediaType.GEOTIFF
    collection = pystac.ItemCollection([
        item("rgb-scene", {"thumbnail": pystac.Asset("thumb.png", media_type=pystac.MediaType.PNG),
                           "visual": pystac.Asset(f"s3://{BUCKET}/scenes/image_rgb.tif", media_type=tiff)}),
        item("pan-scene", {"B01": pystac.Asset(f"s3://{BUCKET}/scenes/image_nodata.tif", media_type=tiff)}),
        item("no-raster", {"metadata": pystac.Asset("meta.xml", media_type=pystac.MediaType.XML)})])
    (tmp_path / "items.json").write_text(json.dumps(collection.to_dict()))
    url = s3.client().generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "scenes/spacenet_ms1.tif"})
    out = tmp_path / "out"
    done = batch(s3, str(tmp_path / "items.json"), url, "--output", str(out), "--scale", str(SCALE))
    assert done.returncode == 1, done.stderr
    scenes = {scene["source"].split("/")[-1].split("?")[0]: scene for scene in
              json.loads((out / "batch.json").read_text())["scenes"]}
    assert scenes["items.json#rgb-scene@visual"]["status"] == "succeeded"
    assert scenes["items.json#pan-scene@B01"]["status"] == "succeeded"
    assert scenes["spacenet_ms1.tif"]["status"] == "succeeded"
    assert "has no GeoTIFF asset (its assets: metadata)" in scenes["items.json#no-raster"]["error"]
    made = pystac.Item.from_file(str(out / "rgb-scene_x2.json"))
    assert made.datetime == pystac.utils.str_to_datetime("2024-05-01T10:30:00Z")
    assert sorted(p.name for p in out.iterdir()) == ["batch.json", "pan-scene_x2.json", "pan-scene_x2.tif",
                                                     "rgb-scene_x2.json", "rgb-scene_x2.tif",
                                                     "spacenet_ms1_x2.json", "spacenet_ms1_x2.tif"]


def test_ctrl_c_stops_cleanly_and_leaves_nothing_partial(s3: S3Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # As from a terminal: a suite started in the background (`.ci/run &`) passes SIGINT ignored to its children.
    run = subprocess.Popen([HNDSR, "batch", f"s3://{BUCKET}/scenes/", "--output", str(out), "--scale", "4"],
                           env={**os.environ, **s3.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not any(out.glob("*.json")) or len(list(out.glob("*_x4.json"))) < 1:  # one scene done, others in flight
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert "interrupted" in err
    scenes = json.loads((out / "batch.json").read_text())["scenes"]
    assert "interrupted" in {scene["status"] for scene in scenes}
    files = sorted(p.name for p in out.iterdir())
    items = {name.removesuffix(".json") for name in files if name.endswith("_x4.json")}
    cogs = {name.removesuffix(".tif") for name in files if name.endswith(".tif")}
    assert items and cogs == items and set(files) == {"batch.json"} | {f"{s}.json" for s in items} | \
        {f"{s}.tif" for s in cogs}  # complete pairs only: no working file, no COG without its item


def test_ray_cluster_of_three_nodes_survives_a_killed_node(s3: S3Server, in_process: dict[str, Path],
                                                           tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="pip install -e '.[ray]'")
    from hndsr_batch.local_ray import local_ray_cluster

    with local_ray_cluster(tmp_path, workers=2, cpus_per_worker=2, env=s3.env) as cluster:
        run = subprocess.Popen([HNDSR, "batch", f"s3://{BUCKET}/scenes/*.tif", "--output", f"s3://{BUCKET}/ray",
                                "--scale", str(SCALE), "--ray", cluster.address], env={**os.environ, **s3.env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while not [key for key in s3.keys("ray/") if key.endswith("_x2.json")]:  # a first scene committed
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.2)
        cluster.kill_worker(1)
        _, err = run.communicate(timeout=600)
        assert cluster.alive_nodes() == 2
    assert run.returncode == 1, err  # the corrupt input, and only it
    assert statuses(s3, "ray") == {**dict.fromkeys(INPUTS, "succeeded"), "zz_corrupt.tif": "failed"}
    on_ray = check_products(s3, "ray", tmp_path)
    for name, local in in_process.items():  # the same product as in process, pixel for pixel
        with rasterio.open(local) as a, rasterio.open(on_ray[name]) as b:
            assert np.array_equal(a.read(), b.read(), equal_nan=True), name
            assert a.profile == b.profile
