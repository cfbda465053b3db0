"""A scene's three stages, the same in process and on Ray:

1. :func:`plan` (CPU): open the raster where it is, check it, read its band statistics, and see whether an
   earlier run already finished it (its item records the same parameters and the COG's size and checksum).
2. :class:`Upscaler` (the model, loaded once per worker): the COG, written by windows in a scratch folder and
   put at its final name in the destination in one atomic step; then its STAC item is described.
3. :func:`commit` (CPU): the item is written, after the COG: an item is the mark of a finished scene.

A scene travels between stages as a flat row of strings and numbers (what Ray Data carries best); a failure is
the row's ``status`` and ``error``, so that one bad input fails alone.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hndsr_model.options import DEFAULT_CONSISTENCY, DEFAULT_VARIANT, UpscaleOptions

from .locations import Destination, destination, gdal_options, gdal_path, sha256_file, storage_errors
from .sources import Scene, Unusable
from .stac import product_item, recorded_file

Row = dict[str, Any]
TileProgress = Callable[[int, int], None]


class SceneStatus(str, Enum):
    PENDING = "pending"  # not planned yet
    PLANNED = "planned"  # readable, to be super-resolved
    WRITTEN = "written"  # the COG is in place; its item is not yet
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"  # an earlier run finished it with the same parameters
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # in flight when the run was stopped: the next run does it again

    @property
    def done(self) -> bool:
        return self in (SceneStatus.SUCCEEDED, SceneStatus.SKIPPED, SceneStatus.FAILED)


@dataclass(frozen=True)
class BatchParameters:
    output: str
    scale: int
    bands: tuple[int, ...] | None = None
    model: str = DEFAULT_VARIANT
    consistency: bool = DEFAULT_CONSISTENCY

    def options(self) -> UpscaleOptions:
        return UpscaleOptions(scale=self.scale, bands=self.bands, model=self.model, consistency=self.consistency)

    def recorded(self) -> dict[str, Any]:
        """What a product's item records of how it was made; a later run skips a scene only on equal values."""
        return {"scale": self.scale, "bands": list(self.bands) if self.bands else None, "model": self.model,
                "ddim_steps": 0, "seed": None, "consistency": self.consistency}

    def names(self, stem: str) -> tuple[str, str]:
        """The COG's and the item's names in the destination."""
        return f"{stem}_x{self.scale}.tif", f"{stem}_x{self.scale}.json"


def new_row(scene: Scene | Unusable) -> Row:
    if isinstance(scene, Unusable):
        return {**_empty_row(scene.source), "status": SceneStatus.FAILED.value, "error": scene.error}
    return {**_empty_row(scene.source), **asdict(scene), "status": SceneStatus.PENDING.value}


def _empty_row(source: str) -> Row:
    return {"source": source, "href": None, "stem": None, "derived_from": None, "datetime": None, "status": None,
            "error": None, "cog": None, "item": None, "input": None, "band_stats": None, "item_json": None,
            "tiles": 0, "plan_s": 0.0, "upscale_s": 0.0, "commit_s": 0.0}


def use_gdal_options() -> None:
    """GDAL's S3 endpoint settings for this process (GDAL reads its options from the environment too)."""
    for name, value in gdal_options().items():
        os.environ.setdefault(name, value)


def plan(row: Row, params: BatchParameters) -> Row:
    if row["status"] != SceneStatus.PENDING.value:
        return row
    import rasterio
    from rasterio.errors import RasterioError

    from hndsr_raster import BandPlan
    from hndsr_raster.radiometry import scene_stats

    started = time.monotonic()
    use_gdal_options()
    out = destination(params.output)
    cog_name, item_name = params.names(row["stem"])
    row = {**row, "cog": out.href(cog_name), "item": out.href(item_name)}
    try:
        if finished(out, cog_name, item_name, params):
            return {**row, "status": SceneStatus.SKIPPED.value, "plan_s": time.monotonic() - started}
        with rasterio.open(gdal_path(row["href"])) as src:
            band_plan = BandPlan.build(src.count, tuple(src.colorinterp), params.bands)
            stats = scene_stats(src, band_plan.model_bands)
            described = {"width": src.width, "height": src.height, "bands": src.count, "dtype": src.dtypes[0],
                         "crs": src.crs.to_string() if src.crs else None}
    except (RasterioError, ValueError, *storage_errors()) as exc:
        return {**row, "status": SceneStatus.FAILED.value, "error": f"cannot read {row['href']}: {exc}",
                "plan_s": time.monotonic() - started}
    except Exception as exc:  # noqa: BLE001 (anything else fails this scene alone, with its reason)
        return {**row, "status": SceneStatus.FAILED.value, "error": failure(exc), "plan_s": time.monotonic() - started}
    return {**row, "status": SceneStatus.PLANNED.value, "input": json.dumps(described),
            "band_stats": json.dumps({str(b): [s.low, s.high, s.fill] for b, s in stats.items()}),
            "plan_s": time.monotonic() - started}


def finished(out: Destination, cog_name: str, item_name: str, params: BatchParameters) -> bool:
    """An earlier run's product: its item records these parameters, and the COG has the size and SHA-256 it
    records (read whole: a product rewritten or damaged since is made again)."""
    text = out.read_text(item_name)
    if text is None:
        return False
    try:
        item = json.loads(text)
    except ValueError:
        return False
    recorded = recorded_file(item)
    if item.get("properties", {}).get("hndsr:parameters") != params.recorded() or recorded is None:
        return False
    size, sha256 = recorded
    return out.size(cog_name) == size and out.sha256(cog_name) == sha256


class Upscaler:
    """The model stage: the pipeline is built once (a Ray actor's lifetime, or a local run's)."""

    def __init__(self, params: BatchParameters, device: str = "auto") -> None:
        from hndsr_model.options import VARIANT_FILES, WEIGHTS_DIR
        from hndsr_model.pipeline import HNDSRPipeline

        self.params = params
        self.pipeline = HNDSRPipeline.from_pretrained(WEIGHTS_DIR / VARIANT_FILES[params.model], device=device)

    def __call__(self, row: Row, progress: TileProgress | None = None) -> Row:
        if row["status"] != SceneStatus.PLANNED.value:
            return row
        from hndsr_raster import RasterError, SceneUpscaler, open_raster
        from hndsr_raster.radiometry import BandStats

        started = time.monotonic()
        use_gdal_options()
        out = destination(self.params.output)
        cog_name, item_name = self.params.names(row["stem"])
        stats = {int(b): BandStats(*v) for b, v in json.loads(row["band_stats"]).items()}
        try:
            with tempfile.TemporaryDirectory(prefix="hndsr-batch-") as scratch:
                cog = Path(scratch) / cog_name
                with open_raster(gdal_path(row["href"])) as src:
                    upscaler = SceneUpscaler(self.pipeline, src, self.params.options(), band_stats=stats)
                    upscaler.write(cog, progress=progress)
                item = self._describe(cog, row, out.href(cog_name))
                out.delete(item_name)  # an earlier run's item must not describe the COG that replaces its own
                out.put_file(cog, cog_name)
        except (RasterError, *storage_errors()) as exc:
            return {**row, "status": SceneStatus.FAILED.value, "error": f"{row['href']}: {exc}",
                    "upscale_s": time.monotonic() - started}
        except Exception as exc:  # noqa: BLE001 (a scene's own failure, e.g. out of GPU memory, fails it alone)
            return {**row, "status": SceneStatus.FAILED.value, "error": failure(exc),
                    "upscale_s": time.monotonic() - started}
        return {**row, "status": SceneStatus.WRITTEN.value, "item_json": json.dumps(item),
                "tiles": upscaler.tiles_total, "upscale_s": time.monotonic() - started}

    def _describe(self, cog: Path, row: Row, cog_href: str) -> dict[str, Any]:
        return product_item(cog, item_id=Path(cog.name).stem, cog_href=cog_href, source_href=row["href"],
                            derived_from=row["derived_from"], source_datetime=row["datetime"],
                            parameters=self.params.recorded(), software=software(self.pipeline.version),
                            size=cog.stat().st_size, sha256=sha256_file(cog))


def failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def software(model_version: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("hndsr")
    except PackageNotFoundError:
        own = "unknown"
    return {"hndsr": own, "hndsr-model": model_version}


def commit(row: Row, params: BatchParameters) -> Row:
    """The item, written once its COG is in place: from now on the scene counts as done."""
    if row["status"] != SceneStatus.WRITTEN.value:
        return row
    started = time.monotonic()
    _, item_name = params.names(row["stem"])
    try:
        destination(params.output).write_text(item_name, row["item_json"])
    except storage_errors() as exc:
        return {**row, "status": SceneStatus.FAILED.value, "error": f"cannot write {row['item']}: {exc}"}
    return {**row, "status": SceneStatus.SUCCEEDED.value, "item_json": None, "commit_s": time.monotonic() - started}
