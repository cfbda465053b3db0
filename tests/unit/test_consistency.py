"""The LR-consistency projection: block means that return the input, per band and in the data's units, at every scale,
across tiles without seams, around nodata, and in every way a request reaches the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from hndsr_client.cli import build_parser, options_of
from hndsr_client.client import form_fields
from hndsr_model.consistency import _apply_lr_response as lr_response_applied
from hndsr_model.consistency import block_mean, project, upsample
from hndsr_model.options import SCALES, UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_raster import SceneUpscaler, open_raster
from hndsr_service.schemas import UpscaleFields
from tests.helpers import rgb_image
from tests.rasters import block_mean as block_mean_np
from tests.rasters import smooth, write_raster
from tests.rasters import upsample as nearest


@pytest.fixture(scope="module")
def tiled() -> HNDSRPipeline:
    """Small tiles: a 40 x 52 image is 2 x 3 overlapping tiles."""
    return HNDSRPipeline.from_pretrained(device="cpu", tile_size=24, tile_overlap=8)


@pytest.fixture(scope="module")
def whole(tiled: HNDSRPipeline) -> HNDSRPipeline:
    """The same weights in one tile for any image here."""
    return HNDSRPipeline(tiled.model, tiled.device, tile_size=256, tile_overlap=16)


def noisy(scale: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lr = torch.rand(2, 3, 9, 13, generator=generator, dtype=torch.float64)
    return upsample(lr, scale) + 0.2 * torch.randn(2, 3, 9 * scale, 13 * scale, generator=generator,
                                                    dtype=torch.float64), lr


@pytest.mark.parametrize("scale", SCALES)
def test_the_projected_output_averages_back_to_the_input(scale: int) -> None:
    sr, lr = noisy(scale)
    before = (block_mean(sr, scale) - lr).abs().mean()
    after = (block_mean(project(sr, lr, scale), scale) - lr).abs().mean()
    assert after < before / 50


@pytest.mark.parametrize("scale", SCALES)
def test_the_steps_on_the_lr_grid_are_the_upsampling_then_the_block_means(scale: int) -> None:
    correction = torch.rand(2, 3, 7, 11, dtype=torch.float64)
    expected = block_mean(upsample(correction, scale), scale)
    assert torch.allclose(lr_response_applied(correction, scale), expected, atol=1e-12)


def test_bands_are_projected_one_by_one_in_any_affine_units() -> None:
    sr, lr = noisy(3, seed=1)
    projected = project(sr, lr, 3)
    # Digital numbers of a 16-bit sensor: the same projection, in those units.
    gain, offset = torch.tensor([4000.0, 250.0, 30000.0])[:, None, None], torch.tensor([1000.0, -50.0, 0.0])[:, None, None]
    in_units = project(sr * gain + offset, lr * gain + offset, 3)
    assert torch.allclose(in_units, projected * gain + offset, rtol=0, atol=1e-6 * 30000)
    # One band's input moves that band's output only.
    moved = lr.clone()
    moved[:, 1] += 0.1
    changed = (project(sr, moved, 3) - projected).abs().amax(dim=(0, 2, 3))
    assert changed[1] > 0.05 and changed[0] == changed[2] == 0


def test_the_input_is_left_alone_and_shapes_are_checked() -> None:
    sr, lr = noisy(2)
    copy = sr.clone()
    project(sr, lr, 2)
    assert torch.equal(sr, copy)
    with pytest.raises(ValueError, match="is not lr"):
        project(sr, lr, 3)


@pytest.mark.parametrize("scale", SCALES)
def test_tiles_keep_the_projection_and_add_no_seam(tiled: HNDSRPipeline, whole: HNDSRPipeline, scale: int) -> None:
    lr = rgb_image(40, 52, seed=scale)

    def consistency(out: np.ndarray) -> float:
        return float(np.abs(block_mean_np(out.transpose(2, 0, 1), scale) - lr.transpose(2, 0, 1)).mean())

    raw = [p.upscale(lr, UpscaleOptions(scale, consistency=False)).image.astype(int) for p in (tiled, whole)]
    projected = [p.upscale(lr, UpscaleOptions(scale, consistency=True)).image.astype(int) for p in (tiled, whole)]
    # Within what uint8 rounding and the 0..255 clamp leave, in tiles as in one piece.
    assert consistency(projected[0]) < 0.25 and consistency(projected[1]) < 0.25
    assert consistency(raw[0]) > 2 * consistency(projected[0])
    # Tiling moves the projected output no more than it moves the network's own.
    seam_raw, seam_projected = (np.abs(a - b) for a, b in (raw, projected))
    assert seam_projected.max() <= seam_raw.max() + 1
    assert seam_projected.mean() <= seam_raw.mean() + 0.05


def test_a_16_bit_scene_keeps_each_bands_radiometry_around_nodata(tiled: HNDSRPipeline, tmp_path: Path) -> None:
    ranges = [(1200, 3400), (200, 900), (10_000, 40_000)]
    data = np.concatenate([smooth(40, 52, 1, seed=band, low=low, high=high, dtype="uint16")
                           for band, (low, high) in enumerate(ranges)])
    data[:, 12:20, 30:38] = 0  # a hole of nodata across tiles
    source = write_raster(tmp_path / "dn.tif", data, nodata=0)
    errors = {}
    for projected in (False, True):
        out = tmp_path / f"x3-{projected}.tif"
        with open_raster(source) as src:
            SceneUpscaler(tiled, src, UpscaleOptions(3, consistency=projected)).write(out)
        with rasterio.open(out) as dst:
            values = dst.read().astype(np.float64)
            assert dst.tags()["HNDSR_CONSISTENCY"] == str(projected).lower()
        valid = data[0] != 0
        assert (values[:, ~nearest(valid, 3)] == 0).all(), "nodata stays nodata"
        # Away from the hole (the model sees it filled): each band's block-mean error over its range.
        near_hole = torch.nn.functional.max_pool2d(torch.from_numpy(~valid)[None].float(), 5, 1, 2)[0].numpy() > 0
        inside = ~near_hole
        errors[projected] = [float(np.abs(block_mean_np(values[b], 3) - data[b])[inside].mean()) / (high - low)
                             for b, (low, high) in enumerate(ranges)]
    assert all(after < 0.001 for after in errors[True]), errors
    assert all(after < before / 3 for before, after in zip(errors[False], errors[True], strict=True)), errors


def test_every_client_carries_the_option() -> None:
    assert UpscaleOptions().consistency is True
    assert form_fields(UpscaleOptions(consistency=False))["consistency"] == "false"
    assert "consistency" not in form_fields(UpscaleOptions())  # the default: left to the server
    assert UpscaleFields(consistency=False).options().consistency is False
    with pytest.raises(ValueError, match="consistency"):
        UpscaleOptions(consistency=json.loads('"yes"'))
    parser = build_parser()
    for argv, expected in ((["--no-consistency"], False), ([], True)):
        args = parser.parse_args(["upscale", "in.tif", "out.tif", *argv])
        assert options_of(args).consistency is expected
    assert parser.parse_args(["batch", "a.tif", "--output", "d", "--scale", "2", "--no-consistency"]).consistency is False
    assert parser.parse_args(["export-onnx", "x.onnx", "--no-consistency"]).consistency is False
