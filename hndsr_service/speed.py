"""What the service knows of its own speed, so that a synchronous request that cannot finish within its deadline
is refused at once (with the estimate, and ``/jobs`` as the way) instead of after the deadline's worth of work.

The unit of work is one LR pixel through the neural operator (tiles x the tile's pixels); a diffusion step costs
:data:`DIFFUSION_STEP_COST` of that per sample. The seconds per unit are learnt per scale from the requests the
service answers (an exponential average: the machine's load is in it), starting from the start-up warm-up. Only
work that fills at least one whole tile teaches it: a small image's time is mostly the fixed cost of a call, and
counted per pixel it would make every large request look too slow. A scale not yet seen borrows the slowest
scale seen (the operator's cost hardly depends on the scale: the trunk runs at the LR size).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hndsr_model.options import UpscaleOptions

# A diffusion step's time per tile, in neural-operator passes: 0.17 at x2 and 0.29 at x4, measured on 256-pixel
# tiles on this project's 2-core CPU (ddim 0 against ddim 4, medians of 5); rounded up.
DIFFUSION_STEP_COST = 0.3
SMOOTHING = 0.3  # the weight of the newest observation


@dataclass(frozen=True)
class Cost:
    """A request's work, in units the estimate counts (see :func:`cost_of`)."""

    scale: int
    units: float
    teaches: bool = True  # whether its time is a fair sample of the speed (see the module's docstring)


def cost_of(options: UpscaleOptions, tiles: int, tile_height: int, tile_width: int, whole_tiles: bool) -> Cost:
    samples = options.uncertainty_samples if options.uncertainty and options.ddim_steps else 1
    passes = 1 + options.ddim_steps * DIFFUSION_STEP_COST * samples
    return Cost(options.scale, tiles * tile_height * tile_width * passes, whole_tiles)


class SpeedEstimate:
    def __init__(self) -> None:
        self._seconds_per_unit: dict[int, float] = {}
        self._lock = threading.Lock()

    def observe(self, cost: Cost, seconds: float) -> None:
        if not cost.teaches:
            return
        per_unit = seconds / max(cost.units, 1.0)
        with self._lock:
            known = self._seconds_per_unit.get(cost.scale)
            self._seconds_per_unit[cost.scale] = per_unit if known is None else (
                SMOOTHING * per_unit + (1 - SMOOTHING) * known)

    def seconds(self, cost: Cost) -> float | None:
        """The estimated seconds of ``cost``; None before anything was measured."""
        with self._lock:
            per_unit = self._seconds_per_unit.get(cost.scale) or max(self._seconds_per_unit.values(), default=None)
        return None if per_unit is None else per_unit * cost.units

    def seconds_per_megapixel(self) -> dict[str, float]:
        """The current estimates, per scale, in seconds per million LR pixels of neural operator (``/version``)."""
        with self._lock:
            return {f"x{scale}": round(per_unit * 1e6, 3) for scale, per_unit in sorted(self._seconds_per_unit.items())}
