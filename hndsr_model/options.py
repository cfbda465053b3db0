"""What a request asks of the model: one type for the service, the scene jobs, the CLI and the clients.

A new option is a field here, its wire form in ``hndsr_service/schemas.py`` (``UpscaleFields``) and the
clients' (``hndsr_client.client.form_fields``), and whatever consumes it. This module imports neither torch
nor anything of HTTP, so the CLI and the clients can use it without loading the model.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

SCALES = range(2, 9)
DDIM_STEPS = range(0, 51)
MAX_SEED = 2**32 - 1
# The shipped weights a request or the CLI picks by name (the ``model`` field / ``--model``): ``bicubic`` is
# trained for the protocol's bicubic downsampling, ``real`` for sensor-like degradation (the model card).
VARIANTS = ("bicubic", "real")
DEFAULT_VARIANT = "bicubic"
WEIGHTS_DIR = Path(__file__).parent / "weights"
VARIANT_FILES: dict[str, str] = dict(zip(VARIANTS, ("hndsr.safetensors", "hndsr-real.safetensors"), strict=True))
# What runs the neural operator (hndsr_model.engines; the service's INFERENCE_ENGINE, the CLI's --engine).
ENGINES = ("auto", "torch", "onnxruntime")
# The side of the square LR tiles the model runs on (the service's TILE_SIZE default, the ONNX export's tile).
DEFAULT_TILE_SIZE = 256
# The ONNX export's defaults for QGIS's Deepness (hndsr export-onnx): it resamples a layer to the model's ground
# resolution (cm per pixel) before tiling it, and HNDSR has no native one, so Sentinel-2's 10 m visible bands
# (--resolution says your imagery's); its tiles overlap by a percentage of the tile.
DEFAULT_EXPORT_RESOLUTION_CM = 1000.0
DEFAULT_EXPORT_OVERLAP_PERCENT = 10
# Seeded diffusion samples per tile behind an uncertainty map with ddim_steps > 0 (the first is the output).
UNCERTAINTY_SAMPLES = range(2, 17)
DEFAULT_UNCERTAINTY_SAMPLES = 8
# Whether outputs are projected onto the input's block means (hndsr_model.consistency) unless a request says: on
# real Landsat-8 -> Sentinel-2 pairs it keeps or gains Y-PSNR and takes the block-mean error below bicubic's; on the
# protocol's bicubic-made LR it costs 0.04-0.28 dB (the model card, "LR-consistency projection").
DEFAULT_CONSISTENCY = True


@dataclass(frozen=True)
class UpscaleOptions:
    """A super-resolution's parameters, checked as they are made (a ``ValueError`` names the field)."""

    scale: int = 4
    ddim_steps: int = 0  # diffusion refinement steps; 0: the neural operator alone (deterministic)
    seed: int | None = None  # the diffusion noise's; None: chosen by :meth:`seeded`
    bands: tuple[int, ...] | None = None  # 1-based source bands, in output order; None: all
    model: str = DEFAULT_VARIANT
    uncertainty: bool = False  # also make the per-pixel uncertainty map
    uncertainty_samples: int = DEFAULT_UNCERTAINTY_SAMPLES  # behind the map, with ddim_steps > 0
    consistency: bool = DEFAULT_CONSISTENCY  # the LR-consistency projection (hndsr_model.consistency)

    def __post_init__(self) -> None:
        _check("scale", self.scale, SCALES)
        _check("ddim_steps", self.ddim_steps, DDIM_STEPS)
        _check("uncertainty_samples", self.uncertainty_samples, UNCERTAINTY_SAMPLES)
        if self.seed is not None:
            _check("seed", self.seed, range(MAX_SEED + 1))
        if not isinstance(self.consistency, bool):
            raise ValueError(f"consistency: true or false, got {self.consistency!r}")
        if self.model not in VARIANTS:
            raise ValueError(f"model: {self.model!r} is not one of {', '.join(VARIANTS)}")
        if isinstance(self.bands, str):  # "4,3,2", as the CLI and the form fields write them
            object.__setattr__(self, "bands", parse_bands(self.bands))
        elif isinstance(self.bands, list):
            object.__setattr__(self, "bands", tuple(self.bands))
        if self.bands is not None and (not self.bands or not all(_is_whole(b) and b >= 1 for b in self.bands)):
            raise ValueError(f"bands: 1-based band numbers, at least one, got {self.bands!r}")

    def seeded(self) -> UpscaleOptions:
        """These options with the seed their output is made with: the one place a random seed is chosen.

        Diffusion without a seed gets a random one (reported, so that the output can be made again); the
        neural operator alone uses none."""
        if self.ddim_steps and self.seed is None:
            return replace(self, seed=random.SystemRandom().randrange(2**31))
        return self


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"4,3,2"`` -> ``(4, 3, 2)``; empty or None -> None (all bands). Raises ValueError."""
    if text is None or not text.strip():
        return None
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"bands must be comma-separated 1-based band numbers such as 4,3,2, got {text!r}") from None
    if min(bands) < 1:
        raise ValueError(f"band numbers start at 1, got {text!r}")
    if len(set(bands)) != len(bands):
        raise ValueError(f"bands lists a band twice: {text!r}")
    return bands


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(name: str, value: int, allowed: range) -> None:
    if not _is_whole(value) or value not in allowed:
        raise ValueError(f"{name}: a whole number in {allowed.start}..{allowed.stop - 1}, got {value!r}")



def shipped_versions() -> dict[str, str]:
    """Each shipped variant's model version, from the manifests beside the weights (no tensor is read)."""
    versions = {}
    for variant, name in VARIANT_FILES.items():
        manifest = (WEIGHTS_DIR / name).with_suffix(".json")
        if manifest.is_file():
            versions[variant] = json.loads(manifest.read_text())["version"]
    return versions
