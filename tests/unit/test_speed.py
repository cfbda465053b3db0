"""The service's estimate of its own speed (hndsr_service/speed.py)."""

from __future__ import annotations

import pytest

from hndsr_model.options import UpscaleOptions
from hndsr_service.speed import Cost, SpeedEstimate, cost_of


def test_diffusion_steps_and_samples_add_work() -> None:
    plain = cost_of(UpscaleOptions(4), tiles=4, tile_height=256, tile_width=256, whole_tiles=True)
    assert plain == Cost(4, 4 * 256 * 256, True)
    diffusion = cost_of(UpscaleOptions(4, ddim_steps=10), 4, 256, 256, True)
    mapped = cost_of(UpscaleOptions(4, ddim_steps=10, uncertainty=True, uncertainty_samples=4), 4, 256, 256, True)
    assert plain.units < diffusion.units < mapped.units


def test_the_estimate_is_learnt_per_scale_and_borrowed_by_unseen_scales() -> None:
    speed = SpeedEstimate()
    assert speed.seconds(Cost(4, 1e6)) is None
    speed.observe(Cost(4, 1e6), 2.0)
    assert speed.seconds(Cost(4, 5e5)) == pytest.approx(1.0)
    assert speed.seconds(Cost(2, 1e6)) == pytest.approx(2.0)  # borrowed
    speed.observe(Cost(2, 1e6), 1.0)
    speed.observe(Cost(4, 1e6), 4.0)  # the load grew: the average moves towards it
    assert 2.0 < speed.seconds(Cost(4, 1e6)) < 4.0 and speed.seconds(Cost(2, 1e6)) == pytest.approx(1.0)
    assert speed.seconds_per_megapixel() == {"x2": 1.0, "x4": pytest.approx(2.6)}


def test_work_smaller_than_a_tile_does_not_teach() -> None:
    speed = SpeedEstimate()
    speed.observe(Cost(4, 1e6), 1.0)
    speed.observe(Cost(4, 64 * 64, teaches=False), 0.5)  # a tiny image: the call's fixed cost, not its pixels
    assert speed.seconds(Cost(4, 1e6)) == pytest.approx(1.0)
