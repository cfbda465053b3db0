"""The real-pair evaluation's helpers: radiometric matching, co-registration and the opensr-test scores."""

from __future__ import annotations

import numpy as np
import pytest

from hndsr_model.evaluate import best_shift, radiometric_match
from hndsr_model.quality import block_mean, correctness, reflectance_consistency, spectral_angle


def textured(size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_radiometric_match_undoes_a_gain_and_offset_per_channel() -> None:
    reference = textured()
    sensor = np.round(reference * np.array([0.7, 0.9, 0.8]) + np.array([30, 10, 20])).astype(np.uint8)
    matched = radiometric_match(sensor, reference)
    # Only the sensor's own rounding remains: at most 1 / gain grey levels, then rounded again.
    assert np.abs(matched.astype(int) - reference.astype(int)).max() <= 1


def test_best_shift_finds_the_offset_between_two_grids() -> None:
    reference = textured()
    offset = np.roll(reference, (1, -2), (0, 1))  # the "sensor" grid is one row down, two columns left
    assert best_shift(offset, reference, border=3, max_shift=4) == (-1, 2)
    assert best_shift(reference, reference, border=3, max_shift=4) == (0, 0)


def blocky_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reference, its x3 input (block means) and that input enlarged by replication."""
    hr = np.random.default_rng(seed).integers(0, 255, (30, 30, 3)).astype(np.uint8)
    lr = block_mean(hr, 3).round().astype(np.uint8)
    return hr, lr, np.repeat(np.repeat(lr, 3, axis=0), 3, axis=1)


def test_correctness_tells_improvement_omission_and_hallucination_apart() -> None:
    hr, _, lr_up = blocky_pair()
    assert correctness(lr_up, lr_up, hr, lr_up, lr_up, 3) == {"improvement_pct": 0.0, "omission_pct": 100.0,
                                                              "hallucination_pct": 0.0}
    assert correctness(hr, lr_up, hr, hr, lr_up, 3)["improvement_pct"] == 100.0
    rng = np.random.default_rng(1)
    noise = np.clip(hr.astype(int) + rng.integers(-120, 120, hr.shape), 0, 255).astype(np.uint8)
    assert correctness(noise, lr_up, hr, noise, lr_up, 3)["hallucination_pct"] > 90


def test_reflectance_consistency_and_spectral_angle() -> None:
    hr, lr, lr_up = blocky_pair()
    assert reflectance_consistency(lr_up, lr, 3) == 0.0  # averaging back gives the input exactly
    assert reflectance_consistency(hr, lr, 3) < 0.5  # only the block means' rounding
    assert reflectance_consistency(np.clip(hr.astype(int) + 10, 0, 255).astype(np.uint8), lr, 3) > 5
    assert spectral_angle(hr, hr, 0) == pytest.approx(0, abs=1e-5)
    assert spectral_angle(hr // 2 * 2, hr // 2, 0) == pytest.approx(0, abs=1e-5)  # a gain keeps the spectra
    assert spectral_angle(hr[..., ::-1], hr, 0) > 10
