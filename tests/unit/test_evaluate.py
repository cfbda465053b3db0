"""The real-pair evaluation's helpers: radiometric matching and co-registration."""

from __future__ import annotations

import numpy as np

from hndsr_model.evaluate import best_shift, radiometric_match


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
