"""hndsr_raster on real weights: georeferenced COG products, nodata and masks, radiometry, band plans, bad rasters."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.io import DatasetReader
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from hndsr_model.options import UpscaleOptions, parse_bands
from hndsr_model.pipeline import HNDSRPipeline, InferenceCancelled
from hndsr_raster import BandPlan, RasterError, RasterTooLarge, SceneUpscaler, open_raster
from hndsr_raster.radiometry import HIGH_PERCENTILE, LOW_PERCENTILE, scene_stats
from hndsr_raster.scene import working_path
from tests.helpers import DATA, requires_data
from tests.rasters import (
    NORTH_UP,
    ROTATED,
    UTM,
    block_mean,
    corners,
    psnr,
    smooth,
    upsample,
    write_raster,
)

RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
GRAY = ColorInterp.gray
UNDEFINED = ColorInterp.undefined
MAX_PIXELS, MAX_BANDS = 16_000_000, 64


@pytest.fixture(scope="module")
def pipeline() -> HNDSRPipeline:
    """Small tiles, so a 64-pixel raster already has several overlapping tiles to blend."""
    return HNDSRPipeline.from_pretrained(device="cpu", tile_size=48, tile_overlap=8)


@pytest.fixture(scope="module")
def wide_pipeline() -> HNDSRPipeline:
    """One tile for any raster here: the cheapest way to produce large outputs."""
    return HNDSRPipeline.from_pretrained(device="cpu", tile_size=256, tile_overlap=16)


def scene(pipeline: HNDSRPipeline, src: DatasetReader, scale: int = 2, uncertainty_file: bool = False,
          band_stats: dict | None = None, **options) -> SceneUpscaler:
    """The upscaler of ``src`` with the test limits; ``options`` are :class:`UpscaleOptions` fields."""
    return SceneUpscaler(pipeline, src, UpscaleOptions(scale, **options), uncertainty_file=uncertainty_file,
                         band_stats=band_stats, max_pixels=MAX_PIXELS, max_bands=MAX_BANDS)


def upscale(pipeline: HNDSRPipeline, source: Path, out_dir: Path, scale: int = 2, **options) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"{source.stem}_x{scale}.tif"
    with open_raster(source) as src:
        scene(pipeline, src, scale, **options).write(dst)
    return dst


def valid_mask(src: DatasetReader) -> np.ndarray:
    """``(H, W)`` True where every band has a value (GDAL's masks, and NaN)."""
    valid = src.read_masks().min(axis=0) > 0
    if np.dtype(src.dtypes[0]).kind == "f":
        valid &= np.isfinite(src.read()).all(axis=0)
    return valid


# -- 1. the product keeps georeferencing, dtype, bands, nodata, metadata --------------------------------------


CASES = {  # dtype: (bands, low, high, nodata)
    "uint8": (3, 20, 235, 0),
    "uint16": (1, 1200, 3400, 0),
    "int16": (1, -500, 1500, -9999),
    "float32": (2, 0.02, 0.35, -9999.0),
}


@pytest.mark.parametrize("dtype", list(CASES))
def test_product_keeps_georeferencing_dtype_bands_and_nodata(pipeline: HNDSRPipeline, tmp_path: Path,
                                                             dtype: str) -> None:
    count, low, high, nodata = CASES[dtype]
    data = smooth(56, 64, count, seed=1, low=low, high=high, dtype=dtype)
    data[:, 10:22, 30:41] = nodata  # a hole of nodata inside the image (across tiles)
    data[:, -5:, :] = nodata  # and a stripe along the edge
    source = write_raster(tmp_path / f"{dtype}.tif", data, nodata=nodata)
    out = upscale(pipeline, source, tmp_path / "out", scale=2)

    with rasterio.open(source) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs == UTM
        assert dst.transform.almost_equals(src.transform @ Affine.scale(0.5))
        assert dst.bounds == pytest.approx(src.bounds)
        assert (dst.width, dst.height) == (2 * src.width, 2 * src.height)
        assert dst.dtypes == src.dtypes and dst.count == src.count == count
        assert dst.nodata == src.nodata == nodata
        values = dst.read()
        src_valid = upsample(valid_mask(src), 2)
        assert (values[:, ~src_valid] == nodata).all(), "pixels over source nodata must be nodata"
        assert (values[:, src_valid] != nodata).all(), "valid pixels must never take the nodata value"
        # The nodata value (far below the data) is not blended into its valid neighbours.
        margin = 0.25 * (high - low)
        assert values[:, src_valid].min() >= low - margin and values[:, src_valid].max() <= high + margin
        assert (dst.read_masks() > 0).all(axis=0).tolist() == src_valid.tolist()
    assert cog_validate(str(out))[0]
    assert list((tmp_path / "out").iterdir()) == [out], "no working files left beside the product"


def test_valid_pixels_next_to_the_nodata_value_do_not_become_nodata(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    """Dark valid pixels (1 DN) beside bright ones: the model's undershoot is clipped to 0, the nodata value."""
    data = np.where((np.indices((48, 48)).sum(axis=0) // 6) % 2 == 0, 1, 200).astype(np.uint8)[None]
    data[:, :4, :4] = 0
    source = write_raster(tmp_path / "dark.tif", data, nodata=0)
    out = upscale(pipeline, source, tmp_path / "out", scale=2)
    with rasterio.open(out) as dst:
        values = dst.read(1)
    src_valid = upsample(data[0] != 0, 2)
    assert (values[~src_valid] == 0).all()
    leaked = int((values[src_valid] == 0).sum())
    assert leaked == 0, f"{leaked} valid output pixels hold the nodata value 0 (read back as nodata)"


def test_a_pixel_nodata_in_one_band_keeps_its_other_bands(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    """RGB with nodata 0: a pixel with no blue (108, 115, 0) is a valid pixel, not a hole."""
    data = smooth(32, 32, 3, seed=1, low=30, high=220)
    data[2, 10:20, 10:20] = 0
    source = write_raster(tmp_path / "no_blue.tif", data, nodata=0, colorinterp=RGB)
    with rasterio.open(source) as src:
        assert (src.dataset_mask()[10:20, 10:20] == 255).all()  # GDAL: valid pixels
    out = upscale(pipeline, source, tmp_path / "out")
    with rasterio.open(out) as dst:
        red_green = dst.read([1, 2])[:, 20:40, 20:40].astype(np.float64)
    assert (red_green != 0).all(), "red and green of a pixel without blue were written as nodata"
    assert np.abs(red_green - upsample(data[:2, 10:20, 10:20], 2)).mean() < 12


def test_nan_pixels_stay_nan_without_a_nodata_value(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    data = smooth(40, 52, 1, seed=2, low=0.0, high=1.0, dtype="float32")
    data[0, 5:15, 5:12] = np.nan
    data[0, 30, 40] = np.nan
    source = write_raster(tmp_path / "nan.tif", data)
    out = upscale(pipeline, source, tmp_path / "out")
    with rasterio.open(out) as dst:
        values = dst.read(1)
        assert dst.nodata is None and dst.dtypes[0] == "float32"
    hole = upsample(np.isnan(data[0]), 2)
    assert np.isnan(values[hole]).all()
    assert np.isfinite(values[~hole]).all()
    assert values[~hole].min() > -0.3 and values[~hole].max() < 1.3  # the hole did not poison its neighbours


def test_nan_pixels_become_nodata_when_a_nodata_value_is_set(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    data = smooth(40, 40, 1, seed=3, low=100.0, high=900.0, dtype="float32")
    data[0, 8:16, 8:16] = np.nan
    data[0, 30:, 30:] = -1.0
    source = write_raster(tmp_path / "nan_nodata.tif", data, nodata=-1.0)
    out = upscale(pipeline, source, tmp_path / "out")
    with rasterio.open(out) as dst:
        values, masks = dst.read(1), dst.read_masks(1)
    invalid = upsample(np.isnan(data[0]) | (data[0] == -1.0), 2)
    assert ((values == -1.0) == invalid).all()
    assert ((masks == 0) == invalid).all()


def test_internal_mask_becomes_the_products_mask(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    data = smooth(48, 40, 3, seed=4)
    mask = np.ones((48, 40), bool)
    mask[:12, :] = False
    mask[30:40, 25:35] = False
    source = write_raster(tmp_path / "masked.tif", data, colorinterp=RGB, mask=mask)
    with rasterio.open(source) as src:
        assert MaskFlags.per_dataset in src.mask_flag_enums[0]
    out = upscale(pipeline, source, tmp_path / "out", scale=3)
    with rasterio.open(out) as dst:
        assert dst.nodata is None
        assert all(MaskFlags.per_dataset in flags for flags in dst.mask_flag_enums)
        expected = upsample(mask, 3)
        for band_mask in dst.read_masks():
            assert ((band_mask > 0) == expected).all()
        assert dst.colorinterp == RGB


def test_alpha_band_is_carried_by_nearest_neighbour(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    rgb = smooth(40, 48, 3, seed=5)
    alpha = np.full((1, 40, 48), 255, np.uint8)
    alpha[0, :10, :] = 0
    alpha[0, 20:30, 20:30] = 128  # partial transparency is a value, not an intensity to blend
    source = write_raster(tmp_path / "rgba.tif", np.concatenate([rgb, alpha]), colorinterp=(*RGB, ColorInterp.alpha))
    out = upscale(pipeline, source, tmp_path / "out")
    with rasterio.open(out) as dst:
        assert dst.count == 4 and dst.colorinterp == (*RGB, ColorInterp.alpha)
        assert (dst.read(4) == upsample(alpha[0], 2)).all()
        assert ((dst.read_masks(1) > 0) == upsample(alpha[0] > 0, 2)).all()
        visible = upsample(alpha[0] > 0, 2)
        # The colour bands were super-resolved (close to their source where visible), not copied.
        colour = dst.read([1, 2, 3]).astype(np.float64)
        assert np.abs(colour[:, visible] - upsample(rgb, 2)[:, visible]).mean() < 12


def test_uncertainty_band_follows_the_image_bands_and_its_mask(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    """The map is the last band, after an alpha band too; the image's values are kept (as float32), and the
    dataset's mask covers the map as it covers the image."""
    rgb = smooth(40, 48, 3, seed=5)
    alpha = np.full((1, 40, 48), 255, np.uint8)
    alpha[0, :10, :] = 0
    source = write_raster(tmp_path / "rgba.tif", np.concatenate([rgb, alpha]), colorinterp=(*RGB, ColorInterp.alpha))
    plain = upscale(pipeline, source, tmp_path / "plain")
    out = upscale(pipeline, source, tmp_path / "out", uncertainty=True)
    with rasterio.open(plain) as before, rasterio.open(out) as dst:
        assert dst.count == 5 and dst.dtypes == ("float32",) * 5 and dst.descriptions[-1] == "uncertainty"
        assert dst.colorinterp == (*RGB, ColorInterp.alpha, UNDEFINED)
        assert np.array_equal(dst.read([1, 2, 3, 4]), before.read().astype(np.float32))
        assert "bands 1,2,3" in dst.tags(5)["HNDSR_UNCERTAINTY"] and dst.tags()["HNDSR_UNCERTAINTY_SAMPLES"] == "0"
        visible = upsample(alpha[0] > 0, 2)
        assert ((dst.read_masks(5) > 0) == visible).all() and (dst.read(5)[visible] > 0).all()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rgba_x2.tif"]


def test_uncertainty_of_float64_nan_data(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    """NaN stays NaN in the map as in the image; float64 data keep a float64 product (float32 would round it)."""
    data = smooth(32, 40, 1, seed=2, low=0.0, high=1.0, dtype="float64")
    data[0, 5:15, 5:12] = np.nan
    out = upscale(pipeline, write_raster(tmp_path / "nan.tif", data), tmp_path / "out", uncertainty=True,
                  ddim_steps=1, seed=0)
    with rasterio.open(out) as dst:
        assert dst.dtypes == ("float64", "float64") and dst.nodata is None
        sigma, hole = dst.read(2), upsample(np.isnan(data[0]), 2)
    assert np.isnan(sigma[hole]).all() and (sigma[~hole] > 0).all()


def test_rotated_geotransform_stays_rotated_with_the_same_footprint(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    source = write_raster(tmp_path / "rotated.tif", smooth(32, 40, 1, seed=6), transform=ROTATED)
    out = upscale(pipeline, source, tmp_path / "out", scale=4)
    with rasterio.open(source) as src, rasterio.open(out) as dst:
        assert src.transform.b != 0 and src.transform.d != 0  # really rotated
        assert dst.transform.almost_equals(src.transform @ Affine.scale(0.25))
        for a, b in zip(corners(src.transform, src.width, src.height),
                        corners(dst.transform, dst.width, dst.height), strict=True):
            assert a == pytest.approx(b)
        assert dst.crs == src.crs


def test_metadata_and_provenance_tags(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    data = smooth(40, 40, 4, seed=7, low=100, high=3000, dtype="uint16")
    source = write_raster(
        tmp_path / "meta.tif", data, colorinterp=(*RGB, UNDEFINED),
        tags={"ACQUISITION": "2024-06-01", "SENSOR": "test-sat"},
        band_tags={4: {"WAVELENGTH": "842nm"}},
        descriptions=["red", "green", "blue", "nir"])
    with rasterio.open(source, "r+") as dst:
        dst.scales, dst.offsets = (0.0001,) * 4, (-0.1,) * 4
        dst.units = ("reflectance",) * 4
    out = upscale(pipeline, source, tmp_path / "out", ddim_steps=1, seed=11)
    with rasterio.open(out) as dst:
        tags = dst.tags()
        assert tags["ACQUISITION"] == "2024-06-01" and tags["SENSOR"] == "test-sat"
        assert tags["HNDSR_SCALE"] == "2" and tags["HNDSR_DDIM_STEPS"] == "1" and tags["HNDSR_SEED"] == "11"
        assert tags["HNDSR_MODEL_VERSION"] == pipeline.version and tags["HNDSR_MODEL"] == "hndsr"
        assert tags["HNDSR_SOURCE_BANDS"] == "1,2,3,4"
        assert dst.descriptions == ("red", "green", "blue", "nir")
        assert dst.colorinterp[:3] == RGB
        assert dst.tags(4)["WAVELENGTH"] == "842nm"
        assert dst.scales == (0.0001,) * 4 and dst.offsets == (-0.1,) * 4 and dst.units == ("reflectance",) * 4


def test_product_is_a_cog_with_overviews(wide_pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    source = write_raster(tmp_path / "cog.tif", smooth(160, 160, 3, seed=8), colorinterp=RGB)
    out = upscale(wide_pipeline, source, tmp_path / "out", scale=4)
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    with rasterio.open(out) as dst:
        assert (dst.width, dst.height) == (640, 640)
        assert dst.overviews(1), "a COG of 640x640 has overviews"
        assert dst.block_shapes[0] == (512, 512) and dst.compression.name.lower() == "deflate"


def test_scene_upscaler_describes_input_and_output(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    source = write_raster(tmp_path / "d.tif", smooth(50, 70, 4, seed=9, high=4000, dtype="uint16"),
                          colorinterp=(*RGB, UNDEFINED))
    with open_raster(source) as src:
        up = scene(pipeline, src, 3, bands=(4, 1))
        assert up.describe_input() == {"width": 70, "height": 50, "bands": 4, "dtype": "uint16",
                                       "crs": "EPSG:32631"}
        out = up.describe_output()
        assert (out["width"], out["height"], out["bands"], out["dtype"]) == (210, 150, 2, "uint16")
        assert out["source_bands"] == [4, 1] and out["scale_factor"] == 3 and out["crs"] == "EPSG:32631"
        assert up.tiles_total == 2 * pipeline.count_tiles(50, 70)  # two single-band passes


# -- 2. radiometry ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "low", "high"), [("uint16", 7000, 9500), ("int16", -2000, 1200),
                                                    ("float32", 0.01, 0.42)])
def test_radiometry_keeps_the_data_units(pipeline: HNDSRPipeline, tmp_path: Path, dtype: str, low: float,
                                         high: float) -> None:
    data = smooth(48, 48, 1, seed=10, low=low, high=high, dtype=dtype)
    source = write_raster(tmp_path / "units.tif", data)
    out = upscale(pipeline, source, tmp_path / "out")
    with rasterio.open(out) as dst:
        values = dst.read(1).astype(np.float64)
    span = high - low
    assert np.percentile(values, 1) == pytest.approx(np.percentile(data, 1), abs=0.05 * span)
    assert np.percentile(values, 99) == pytest.approx(np.percentile(data, 99), abs=0.05 * span)
    assert values.mean() == pytest.approx(float(data.mean()), abs=0.02 * span)
    assert np.abs(block_mean(values, 2) - data[0]).mean() < 0.03 * span


@pytest.mark.parametrize(("dtype", "values"), [("uint16", (40_000, 65_535)), ("int16", (-32_768, 20_000)),
                                               ("uint8", (0, 255))])
def test_overshoot_is_clipped_to_the_dtype_range_never_wrapped(pipeline: HNDSRPipeline, tmp_path: Path, dtype: str,
                                                               values: tuple[int, int]) -> None:
    """Hard edges at the dtype's limits make the model over- and undershoot; the result saturates."""
    lo, hi = values
    checker = (np.indices((40, 40)) // 5).sum(axis=0) % 2 == 0
    data = np.where(checker, hi, lo).astype(dtype)[None]
    out = upscale(pipeline, write_raster(tmp_path / "edges.tif", data), tmp_path / "out")
    with rasterio.open(out) as dst:
        result = dst.read(1).astype(np.int64)
    info = np.iinfo(dtype)
    span = hi - lo
    high_side = upsample(checker, 2)
    for region, value in ((high_side, hi), (~high_side, lo)):
        assert abs(np.median(result[region]) - value) < 0.1 * span
        if value in (info.min, info.max):
            # The model overshoots past the dtype's limit: the pixels saturate there ...
            assert (result[region] == value).any()
            # ... and none wrapped around to the other end of the range.
            assert (np.abs(result[region] - value) < 0.5 * span).all()


def test_statistics_are_taken_over_the_whole_scene(tmp_path: Path) -> None:
    data = smooth(90, 120, 1, seed=12, low=300, high=5000, dtype="uint16")
    data[0, :, :60] //= 4  # a dark half: per-tile statistics would differ from the scene's
    data[0, :5, :5] = 0
    data = np.concatenate([data, data // 2])  # a second band: its statistics are its own
    source = write_raster(tmp_path / "stats.tif", data, nodata=0)
    with open_raster(source) as src:
        both = scene_stats(src, (1, 2))
    stats = both[1]
    valid = data[0][data[0] != 0].astype(np.float64)
    assert both[2].high == pytest.approx(np.percentile(data[1][data[1] != 0], HIGH_PERCENTILE))
    low, high = np.percentile(valid, [LOW_PERCENTILE, HIGH_PERCENTILE])
    assert stats.low == pytest.approx(low) and stats.high == pytest.approx(high)
    assert stats.fill == pytest.approx((np.median(valid) - low) / (high - low))
    restored = stats.denormalise(stats.normalise(data[0]), np.dtype("uint16"))
    assert (restored == data[0]).all()


def test_uint8_rgb_geotiff_gives_exactly_the_pipelines_pixels(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    data = smooth(72, 88, 3, seed=13)
    source = write_raster(tmp_path / "rgb.tif", data, colorinterp=RGB)
    out = upscale(pipeline, source, tmp_path / "out", scale=3)
    expected = pipeline.upscale(np.ascontiguousarray(data.transpose(1, 2, 0)), UpscaleOptions(3)).image
    with rasterio.open(out) as dst:
        assert (dst.read().transpose(1, 2, 0) == expected).all()


@requires_data("geotiff", "public", "image_north.tif")
def test_tiled_and_untiled_products_agree(tmp_path: Path, record_property) -> None:
    """A 1024x1024 16-bit scene at x2, in 256-pixel tiles and in one tile: the issue's seam bound, 45 dB."""
    with rasterio.open(DATA / "geotiff" / "public" / "image_north.tif") as src:
        window = Window(800, 800, 1024, 1024)
        data = src.read(window=window)
        source = write_raster(tmp_path / "north.tif", data, crs=src.crs, transform=src.window_transform(window),
                              tiled=True, blockxsize=256, blockysize=256)
    outputs = []
    for tile_size in (256, 1024):
        tiled = HNDSRPipeline.from_pretrained(device="cpu", tile_size=tile_size, tile_overlap=16)
        with rasterio.open(upscale(tiled, source, tmp_path / f"t{tile_size}")) as dst:
            outputs.append(dst.read(1))
    peak = float(data.max()) - float(data.min())  # the data's own range, not the dtype's 65535
    measured = psnr(outputs[0], outputs[1], peak)
    record_property("tiled_vs_untiled_psnr_db", round(measured, 2))
    print(f"tiled vs untiled PSNR: {measured:.2f} dB over the data range {peak:.0f}")
    assert measured >= 45.0


# -- 3. band plans ------------------------------------------------------------------------------------------


def test_parse_bands() -> None:
    assert parse_bands("4,3,2") == (4, 3, 2)
    assert parse_bands("1") == (1,)
    assert parse_bands(" 2, 3 ") == (2, 3)
    for empty in (None, "", "  "):
        assert parse_bands(empty) is None
    for bad in ("a", "4,x", "1,,2", "1;2", "0", "2,0", "-1", "1,1", "3,2,3"):
        with pytest.raises(ValueError):
            parse_bands(bad)


def plan(count: int, interp: tuple[ColorInterp, ...], bands: tuple[int, ...] | None = None) -> list[tuple]:
    return [(g.kind, g.source, g.target) for g in BandPlan.build(count, interp, bands).groups]


def test_band_plans() -> None:
    assert plan(1, (GRAY,)) == [("mono", (1,), (1,))]
    assert plan(2, (GRAY, UNDEFINED)) == [("mono", (1,), (1,)), ("mono", (2,), (2,))]
    assert plan(3, (GRAY, UNDEFINED, UNDEFINED)) == [("rgb", (1, 2, 3), (1, 2, 3))]
    assert plan(4, (*RGB, UNDEFINED)) == [("rgb", (1, 2, 3), (1, 2, 3)), ("mono", (4,), (4,))]
    assert plan(4, (*RGB, ColorInterp.alpha)) == [("rgb", (1, 2, 3), (1, 2, 3)), ("nearest", (4,), (4,))]
    assert plan(4, (UNDEFINED,) * 4) == [("mono", (b,), (b,)) for b in range(1, 5)]
    # Sentinel-style order (blue, green, red, nir): the colour model still gets red, green, blue.
    bgrn = (ColorInterp.blue, ColorInterp.green, ColorInterp.red, UNDEFINED)
    assert plan(4, bgrn) == [("rgb", (3, 2, 1), (3, 2, 1)), ("mono", (4,), (4,))]
    # A selection picks and orders the output bands.
    assert plan(4, (*RGB, UNDEFINED), (4, 3, 2)) == [("rgb", (4, 3, 2), (1, 2, 3))]
    assert plan(4, (*RGB, UNDEFINED), (4, 1)) == [("mono", (4,), (1,)), ("mono", (1,), (2,))]
    assert BandPlan.build(5, (*RGB, UNDEFINED, ColorInterp.alpha), None).model_passes == 2
    with pytest.raises(ValueError, match="band 5"):
        BandPlan.build(4, (*RGB, UNDEFINED), (5, 1))


def test_four_bands_each_super_resolved_in_place(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    data = np.stack([smooth(40, 40, 1, seed=20 + b, low=200 * (b + 1), high=200 * (b + 1) + 2000,
                            dtype="uint16")[0] for b in range(4)])
    source = write_raster(tmp_path / "rgbn.tif", data, colorinterp=(*RGB, UNDEFINED))
    out = upscale(pipeline, source, tmp_path / "out")
    with rasterio.open(out) as dst:
        assert dst.count == 4
        result = dst.read().astype(np.float64)
    for band in range(4):
        errors = [np.abs(block_mean(result[band], 2) - data[other]).mean() for other in range(4)]
        assert int(np.argmin(errors)) == band and errors[band] < 60, errors


def test_bands_selects_and_orders_the_output(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    data = np.stack([smooth(40, 40, 1, seed=30 + b, low=500, high=3500, dtype="uint16")[0] for b in range(4)])
    source = write_raster(tmp_path / "sel.tif", data, colorinterp=(*RGB, UNDEFINED),
                          descriptions=["red", "green", "blue", "nir"])
    out = upscale(pipeline, source, tmp_path / "out", bands=(4, 1))
    with rasterio.open(out) as dst:
        assert dst.count == 2 and dst.descriptions == ("nir", "red")
        assert dst.colorinterp[1] == ColorInterp.red
        assert dst.tags()["HNDSR_SOURCE_BANDS"] == "4,1"
        result = dst.read().astype(np.float64)
    assert np.abs(block_mean(result[0], 2) - data[3]).mean() < 60
    assert np.abs(block_mean(result[1], 2) - data[0]).mean() < 60


def test_band_index_out_of_range_is_a_raster_error(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    source = write_raster(tmp_path / "three.tif", smooth(16, 16, 3), colorinterp=RGB)
    with open_raster(source) as src, pytest.raises(RasterError, match="band 4"):
        scene(pipeline, src, 2, bands=(4, 3, 2))


# -- 4. bad input: designed errors, nothing left on disk ---------------------------------------------------


@pytest.fixture
def out_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "products"
    folder.mkdir()
    yield folder
    assert list(folder.iterdir()) == [], "a refused or failed raster left files behind"


def attempt(pipeline: HNDSRPipeline, source: Path | bytes, out_dir: Path, **options) -> None:
    with open_raster(source) as src:
        scene(pipeline, src, 2, **options).write(out_dir / "out.tif")


def huge_header_tiff(path: Path) -> Path:
    """100,000 x 100,000 pixels claimed by the header; no block written (a few MB of offsets, no pixels)."""
    with rasterio.open(path, "w", driver="GTiff", width=100_000, height=100_000, count=1, dtype="uint8",
                       tiled=True, sparse_ok=True, crs=UTM, transform=NORTH_UP):
        pass
    return path


def test_a_tiff_lying_about_its_size_is_refused_before_decoding(pipeline: HNDSRPipeline, tmp_path: Path,
                                                                out_dir: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    source = huge_header_tiff(tmp_path / "huge.tif")

    def no_pixels(*args, **kwargs):
        raise AssertionError("pixels were read before the size guard")

    for method in ("read", "read_masks", "dataset_mask"):
        monkeypatch.setattr(DatasetReader, method, no_pixels)
    with pytest.raises(RasterTooLarge, match="10,000,000,000"):  # an ImageTooLarge: the service's 413
        attempt(pipeline, source, out_dir)


def test_ten_thousand_bands_are_too_large(pipeline: HNDSRPipeline, tmp_path: Path, out_dir: Path) -> None:
    source = tmp_path / "bands.tif"
    tifffile.imwrite(source, np.zeros((2, 2, 10_000), np.uint8), photometric="minisblack", planarconfig="contig")
    with rasterio.open(source) as src:
        assert src.count == 10_000
    with pytest.raises(RasterTooLarge, match="10,000 bands"):
        attempt(pipeline, source, out_dir)


def test_complex_data_is_refused(pipeline: HNDSRPipeline, tmp_path: Path, out_dir: Path) -> None:
    source = write_raster(tmp_path / "complex.tif", (np.ones((1, 16, 16)) * (1 + 2j)).astype(np.complex64))
    with pytest.raises(RasterError, match="complex64"):
        attempt(pipeline, source, out_dir)


def test_one_bit_single_band_is_refused(pipeline: HNDSRPipeline, tmp_path: Path, out_dir: Path) -> None:
    source = write_raster(tmp_path / "bits.tif", (smooth(16, 16) > 128).astype(np.uint8), nbits=1)
    with pytest.raises(RasterError):
        attempt(pipeline, source, out_dir)


def test_one_bit_rgb_is_refused(pipeline: HNDSRPipeline, tmp_path: Path, out_dir: Path) -> None:
    """GDAL reports NBITS per band (and shows a 1-bit RGB image as RGB, not as paletted)."""
    source = write_raster(tmp_path / "bits_rgb.tif", (smooth(16, 16, 3) > 128).astype(np.uint8), nbits=1,
                          photometric="RGB")
    with rasterio.open(source) as src:
        assert src.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == "1" and src.colorinterp == RGB
    with pytest.raises(RasterError, match="bits"):
        attempt(pipeline, source, out_dir)


def test_paletted_raster_is_refused(pipeline: HNDSRPipeline, tmp_path: Path, out_dir: Path) -> None:
    source = write_raster(tmp_path / "classes.tif", (smooth(16, 16) // 64).astype(np.uint8))
    with rasterio.open(source, "r+") as dst:
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255)})
    with pytest.raises(RasterError, match="palett"):
        attempt(pipeline, source, out_dir)


@requires_data("geotiff", "public", "image_colormap.tif")
def test_public_colormap_raster_is_refused(pipeline: HNDSRPipeline, out_dir: Path) -> None:
    with pytest.raises(RasterError, match="palett"):
        attempt(pipeline, DATA / "geotiff" / "public" / "image_colormap.tif", out_dir)


@pytest.mark.parametrize("compress", [None, "deflate"])
def test_truncated_files_are_raster_errors(pipeline: HNDSRPipeline, tmp_path: Path, out_dir: Path,
                                           compress: str | None) -> None:
    source = write_raster(tmp_path / "whole.tif", smooth(64, 64, 1, high=4000, dtype="uint16"), compress=compress)
    data = source.read_bytes()
    for cut in (4, 8, 100, 400, len(data) // 2, len(data) - 200, len(data) - 1):
        with pytest.raises(RasterError):
            attempt(pipeline, data[:cut], out_dir)
        on_disk = tmp_path / f"cut{cut}.tif"
        on_disk.write_bytes(data[:cut])
        with pytest.raises(RasterError):
            attempt(pipeline, on_disk, out_dir)


def test_pixels_damaged_after_a_valid_header_fail_without_leftovers(pipeline: HNDSRPipeline, tmp_path: Path,
                                                                    out_dir: Path) -> None:
    """A deflate stream overwritten with junk: the header opens, the read fails in the middle of the work."""
    source = write_raster(tmp_path / "damaged.tif", smooth(96, 64, 1, high=4000, dtype="uint16"),
                          compress="deflate", blockysize=16)
    with rasterio.open(source) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_0_4", "TIFF", bidx=1))
    raw = bytearray(source.read_bytes())
    raw[offset:offset + 64] = b"\xff" * 64
    source.write_bytes(bytes(raw))
    with pytest.raises(RasterError):
        attempt(pipeline, source, out_dir)


def test_cancel_midway_leaves_nothing(pipeline: HNDSRPipeline, tmp_path: Path, out_dir: Path) -> None:
    source = write_raster(tmp_path / "c.tif", smooth(100, 60, 1, high=4000, dtype="uint16"))
    with open_raster(source) as src:
        up = scene(pipeline, src, 2)
        # Cancel once the first tile row is in (tiles run a row at a time, in batches).
        with pytest.raises(InferenceCancelled):
            up.write(out_dir / "out.tif", should_cancel=lambda: up.tiles_done > 0)
        assert 0 < up.tiles_done < up.tiles_total


@pytest.mark.parametrize("transform", [None, Affine(2.0, 0.0, 100.0, 0.0, -2.0, 500.0)])
def test_tiff_without_crs_works(pipeline: HNDSRPipeline, tmp_path: Path, transform: Affine | None) -> None:
    source = write_raster(tmp_path / "plain.tif", smooth(30, 40, 3), crs=None, transform=transform)
    out = upscale(pipeline, source, tmp_path / "out")
    with rasterio.open(source) as src, rasterio.open(out) as dst:
        assert src.crs is None and dst.crs is None
        assert (dst.width, dst.height) == (80, 60) and dst.count == 3
        if transform is not None:
            assert dst.transform.almost_equals(transform @ Affine.scale(0.5))
            assert dst.bounds == pytest.approx(src.bounds)
    assert cog_validate(str(out))[0]


@pytest.mark.parametrize("options", [{}, {"ddim_steps": 1, "seed": 9, "uncertainty": True, "uncertainty_samples": 2,
                                         "uncertainty_file": True}], ids=["plain", "diffusion-map-file"])
def test_a_run_resumed_from_its_checkpoints_makes_the_same_product(pipeline: HNDSRPipeline, tmp_path: Path,
                                                                    options: dict) -> None:
    """A job resumed by another process replays the rows it finished and computes the rest: identical pixels,
    masks and map, whichever row it stopped after (two model passes here: RGB, then the NIR band alone)."""
    data = np.stack([smooth(70, 52, 1, seed=40 + b, low=300, high=5000, dtype="uint16")[0] for b in range(4)])
    data[:, :4, :4] = 0
    source = write_raster(tmp_path / "rgbn.tif", data, colorinterp=(*RGB, UNDEFINED), nodata=0)
    reference = upscale(pipeline, source, tmp_path / "reference", **options)
    with open_raster(source) as src:
        recorded = scene(pipeline, src, 2, **options)
        part = tmp_path / "recorded.part.tif"
        checkpoints = [step.writes for step in recorded.steps(part, record=True)]
        stats = recorded.band_stats()
    assert len(checkpoints) == recorded.rows_total == 2 * pipeline.count_tile_rows(70) and all(checkpoints)
    for resume in (1, 2, 3, recorded.rows_total):
        dst = tmp_path / f"resumed-{resume}" / "rgbn_x2.tif"
        dst.parent.mkdir()
        with open_raster(source) as src:
            resumed = scene(pipeline, src, 2, **options, band_stats=stats)
            steps = list(resumed.steps(working_path(dst), resume_rows=resume, load_row=checkpoints.__getitem__))
            resumed.finish(working_path(dst), dst)
        assert [step.rows_done for step in steps] == list(range(resume + 1, recorded.rows_total + 1))
        assert resumed.tiles_done == resumed.tiles_total
        for name in ("rgbn_x2.tif", "rgbn_x2.uncertainty.tif") if options else ("rgbn_x2.tif",):
            with rasterio.open(reference.parent / name) as want, rasterio.open(dst.parent / name) as got:
                assert np.array_equal(want.read(), got.read()) and np.array_equal(want.read_masks(), got.read_masks())


def test_steps_may_each_run_in_another_thread(pipeline: HNDSRPipeline, tmp_path: Path) -> None:
    """A job advances its steps from a pool's threads: rasterio's per-thread GDAL environment must not span
    them (one entered in a thread and left in another failed a job with EnvError, reported as a damaged raster)."""
    source = write_raster(tmp_path / "pan.tif", smooth(120, 60, 1, seed=4, high=3000, dtype="uint16"))
    reference = upscale(pipeline, source, tmp_path / "reference")
    dst = tmp_path / "threaded" / "pan_x2.tif"
    dst.parent.mkdir()
    with open_raster(source) as src, ThreadPoolExecutor(max_workers=1) as pool:
        upscaler = scene(pipeline, src, 2)
        steps = upscaler.steps(working_path(dst))
        while pool.submit(next, steps, None).result() is not None:  # a new thread for every step
            pool.shutdown(wait=True)
            pool = ThreadPoolExecutor(max_workers=1)
        upscaler.finish(working_path(dst), dst)
    with rasterio.open(reference) as want, rasterio.open(dst) as got:
        assert np.array_equal(want.read(), got.read())
