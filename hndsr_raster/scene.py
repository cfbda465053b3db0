"""One raster in, its super-resolved Cloud-Optimized GeoTIFF out, by windows.

:class:`SceneUpscaler` validates a source (cheap: header only), then writes the product in steps of
one tile row of the model (:meth:`SceneUpscaler.steps`), so memory does not grow with the scene and a
caller can release the model between steps; :meth:`SceneUpscaler.finish` turns the striped working
file into a COG. The synchronous API, the scene jobs and the CLI all go through it, so a job's output
and a synchronous answer for the same input and seed are the same bytes.
"""

from __future__ import annotations

import contextlib
import errno
import io
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader, DatasetWriter, MemoryFile
from rasterio.windows import Window

from hndsr_model.data import ImageDecodeError, ImageTooLarge, check_pixels
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import CancelCheck, HNDSRPipeline, Progress

from .bands import BandGroup, BandPlan
from .checkpoint import MAP, PRODUCT, RecordingWriter, RowWrites
from .radiometry import BandStats, scene_stats

SUPPORTED_DTYPES = frozenset({"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"})
# GDAL's block cache: the bound on what reading and writing windows may hold. In bytes: rasterio hands an integer
# GDAL_CACHEMAX to GDALSetCacheMax64, which counts bytes (GDAL's "small numbers are MB" applies to the text
# option only), and the setting outlives the Env. Given as 256 it was a 256-byte cache: every later read in the
# process decompressed each tile again for every line it needed (a decimated read of a 1200x1200 float64 COG:
# 44 s instead of 0.2 s).
GDAL_CACHE_BYTES = 256 * 2**20
FULL_BELOW_BYTES = 1 << 20  # a write that failed with less than this left on its filesystem failed for space
# Both are expected here, not signs of trouble: a plain TIFF has no georeferencing, and where a nodata value
# and an alpha band both exist GDAL lets the nodata value decide the mask.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
warnings.filterwarnings("ignore", category=NodataShadowWarning)
UNCERTAINTY = "uncertainty"  # the uncertainty map's band description
COG_OPTIONS = {"compress": "DEFLATE", "predictor": "YES", "bigtiff": "IF_SAFER", "blocksize": 512,
               "overview_resampling": "AVERAGE"}


RowLoader = Callable[[int], bytes]  # a finished tile row's checkpoint (RowWrites bytes), by row number


class RasterError(ImageDecodeError):
    """A raster this service cannot super-resolve (damaged, categorical, unsupported type)."""


class RasterTooLarge(ImageTooLarge):
    """More pixels or bands than the configured limits."""


@dataclass(frozen=True)
class SceneStep:
    """One tile row of the model written: ``rows_done`` of :attr:`SceneUpscaler.rows_total`, ``tiles_done`` of
    its ``tiles_total``, and with recording on the row's writes (:class:`RowWrites` bytes) to checkpoint."""

    rows_done: int
    tiles_done: int
    writes: bytes | None = None


@contextlib.contextmanager
def open_raster(source: Path | str | bytes) -> Iterator[DatasetReader]:
    """Open a raster file or in-memory bytes; damaged or non-raster data raises :class:`RasterError`.

    GDAL's messages name the file (a server path, or ``/vsimem/``), so the errors are in our own words. A ``str``
    may be any name GDAL opens (``/vsis3/bucket/key``, ``/vsicurl/https://…``).
    """
    if isinstance(source, bytes) and not source:
        raise RasterError("image is empty")
    with contextlib.ExitStack() as stack:
        try:
            if isinstance(source, bytes):
                src = stack.enter_context(stack.enter_context(MemoryFile(source)).open())
            else:
                src = stack.enter_context(rasterio.open(source))
        except RasterioError:
            raise RasterError("not a raster this service can read (GeoTIFF/TIFF, PNG, JPEG, WebP)") from None
        try:
            yield src
        except RasterioError:
            raise RasterError("raster is damaged or truncated") from None


class SceneUpscaler:
    """The super-resolution of one open raster into a GeoTIFF of the same kind.

    ``uncertainty_file`` puts the map (``options.uncertainty``) in a file of its own beside the product
    (:func:`uncertainty_path`) instead of the product's last band; ``band_stats`` fixes each model band's
    normalisation beforehand (a job's, at submit), else it comes from the scene.
    """

    def __init__(self, pipeline: HNDSRPipeline, src: DatasetReader, options: UpscaleOptions, *,
                 uncertainty_file: bool = False, band_stats: dict[int, BandStats] | None = None,
                 max_pixels: int | None = None, max_bands: int | None = None) -> None:
        _check_source(src, max_pixels, max_bands)
        try:
            self.plan = BandPlan.build(src.count, tuple(src.colorinterp), options.bands)
        except ValueError as exc:
            raise RasterError(str(exc)) from None
        self.pipeline = pipeline
        self.src = src
        self.options = options.seeded()
        self.uncertainty_file = uncertainty_file
        self.dtype = np.dtype(src.dtypes[self.plan.source[0] - 1])
        self.sigma_group = self._sigma_group()
        self.sigma_band = len(self.plan.source) + 1 if self.sigma_group and not uncertainty_file else None
        # A TIFF has one dtype for all its bands: beside the float map, the image keeps its values in its own
        # units, as floats wide enough to hold them exactly (float32 up to 16-bit data, else float64).
        self.product_dtype = np.promote_types(self.dtype, np.float32) if self.sigma_band else self.dtype
        self.tiles_total = self.plan.model_passes * pipeline.count_tiles(src.height, src.width)
        self.rows_total = self.plan.model_passes * pipeline.count_tile_rows(src.height)
        self.tiles_done = 0
        self._band_stats = band_stats

    # -- what it is and what it makes -------------------------------------------------------------

    @property
    def seed(self) -> int | None:
        """The diffusion noise's seed, chosen now if the options had none (None without diffusion)."""
        return self.options.seed

    def describe_input(self) -> dict[str, Any]:
        src = self.src
        return {"width": src.width, "height": src.height, "bands": src.count, "dtype": src.dtypes[0],
                "crs": src.crs.to_string() if src.crs else None}

    def describe_output(self) -> dict[str, Any]:
        s = self.options.scale
        out = {"width": self.src.width * s, "height": self.src.height * s,
               "bands": len(self.plan.source) + bool(self.sigma_band), "dtype": str(self.product_dtype),
               "crs": self.describe_input()["crs"], "scale_factor": s, "ddim_steps": self.options.ddim_steps,
               "seed": self.seed, "source_bands": list(self.plan.source)}
        return {**out, "uncertainty_band": self.sigma_band} if self.sigma_band else out

    def output_bytes_estimate(self) -> int:
        """Uncompressed size of the product and of a map of its own: the working files and the COGs never
        exceed it each."""
        out = self.describe_output()
        own_map = np.dtype(np.float32).itemsize if self._sigma_file else 0
        return out["width"] * out["height"] * (out["bands"] * self.product_dtype.itemsize + own_map)

    @property
    def _sigma_file(self) -> bool:
        return self.sigma_group is not None and self.uncertainty_file

    # -- the work ---------------------------------------------------------------------------------

    def write(self, dst: Path, should_cancel: CancelCheck | None = None, progress: Progress | None = None) -> None:
        """All steps, then the COG; on any failure nothing is left at ``dst`` or beside it."""
        part = working_path(dst)
        try:
            for step in self.steps(part, should_cancel):
                if progress:
                    progress(step.tiles_done, self.tiles_total)
            self.finish(part, dst)
        finally:
            part.unlink(missing_ok=True)
            uncertainty_path(part).unlink(missing_ok=True)

    def steps(self, part: Path, should_cancel: CancelCheck | None = None, record: bool = False,
              resume_rows: int = 0, load_row: RowLoader | None = None) -> Iterator[SceneStep]:
        """Write the product into the striped working file ``part`` (and a map of its own into
        ``uncertainty_path(part)``); yields a :class:`SceneStep` after each tile row.

        ``record``: each step carries its row's writes. ``resume_rows``: the first rows are not computed but
        replayed from ``load_row(row)`` (checkpoints a recording run made), and the rest are the same bytes
        an uninterrupted run writes.

        Each step may run in another thread (a job runs its steps in a pool's threads, one slot at a time).
        rasterio keeps its GDAL environment per thread, so the environment is entered and left within each
        step: one entered in a thread and left in another raised ``EnvError: No GDAL environment exists``."""
        if resume_rows and load_row is None:
            raise ValueError("resuming needs load_row")
        work = self._steps(part, should_cancel, record, resume_rows, load_row)
        try:
            while True:
                with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
                    step = next(work, None)
                if step is None:
                    return
                yield step
        finally:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
                work.close()

    def _steps(self, part: Path, should_cancel: CancelCheck | None, record: bool, resume_rows: int,
               load_row: RowLoader | None) -> Iterator[SceneStep]:
        """:meth:`steps` without its GDAL environment."""
        with write_errors(part), contextlib.ExitStack() as stack:
            dst = stack.enter_context(rasterio.open(part, "w", **self._profile()))
            self._copy_metadata(dst)
            writers = {PRODUCT: RecordingWriter(dst, PRODUCT)}
            if self._sigma_file:
                sigma_dst = stack.enter_context(rasterio.open(uncertainty_path(part), "w", **self._sigma_profile()))
                sigma_dst.update_tags(**self.provenance())
                self._describe_sigma(sigma_dst, 1)
                writers[MAP] = RecordingWriter(sigma_dst, MAP)
            first_row = 0
            for group in self.plan.groups:
                if group.kind == "nearest":
                    self._copy_nearest(writers[PRODUCT], group)
                    continue
                yield from self._super_resolve(writers, _Pass(group, first_row, resume_rows, load_row, record),
                                               should_cancel)
                first_row += self.pipeline.count_tile_rows(self.src.height)

    def finish(self, part: Path, dst: Path) -> None:
        """Working file -> COG (internal tiles, overviews, lossless compression) at ``dst``, atomically; then
        the same for a map of its own, to ``uncertainty_path(dst)`` (if that fails, ``dst`` goes too: a product
        is never left without the map it was asked with)."""
        _to_cog(part, dst)
        if self._sigma_file:
            try:
                _to_cog(uncertainty_path(part), uncertainty_path(dst))
            except BaseException:
                dst.unlink(missing_ok=True)
                raise

    def _super_resolve(self, writers: dict[str, RecordingWriter], one: _Pass, should_cancel: CancelCheck | None
                       ) -> Iterator[SceneStep]:
        """One pass of the model over a group's bands; for the map's group, the uncertainty map's rows too."""
        group = one.group
        stats = [self._stats()[band] for band in group.source]
        src, s = self.src, self.options.scale
        rows_total = self.pipeline.count_tile_rows(src.height)
        tiles_per_row = self.pipeline.count_tiles(src.height, src.width) // rows_total
        first_tile = one.first_row * tiles_per_row
        replayed = min(max(one.resume_rows - one.first_row, 0), rows_total)
        for row in range(one.first_row, one.first_row + replayed):
            RowWrites.from_bytes(one.load_row(row)).replay(writers)  # type: ignore[misc]  # steps() checks it
        self.tiles_done = first_tile + replayed * tiles_per_row

        def read_rows(y0: int, y1: int) -> torch.Tensor:
            window = Window(0, y0, src.width, y1 - y0)
            raw = src.read(list(group.source), window=window, out_dtype="float32")
            valid = self._valid(window, group.source, raw)
            lr = np.stack([st.normalise(band) for st, band in zip(stats, raw, strict=True)])
            for band, band_valid, st in zip(lr, valid, stats, strict=True):
                band[~band_valid] = st.fill
            return torch.from_numpy(np.repeat(lr, 3, axis=0) if group.kind == "mono" else lr)

        def progress(done: int, _total: int) -> None:
            self.tiles_done = first_tile + done

        sigma_writer = writers.get(MAP, writers[PRODUCT]) if group is self.sigma_group else None
        options = replace(self.options, uncertainty=sigma_writer is not None)  # the map is one group's
        rows = self.pipeline.upscale_rows(read_rows, src.height, src.width, options, should_cancel, progress,
                                          start_row=replayed)
        for row, (hr_row, band) in enumerate(rows, start=one.first_row + replayed):
            log = RowWrites() if one.record else None
            for writer in writers.values():
                writer.log = log
            values = band.numpy()  # (3, rows, width), or (4, ...) with the map as the 4th channel
            window = Window(0, hr_row, src.width * s, values.shape[1])
            self._write_band(writers[PRODUCT], group, stats, window, values[:3])
            if sigma_writer is not None:
                self._write_sigma(sigma_writer, group, window, values[3:])
            for writer in writers.values():
                writer.log = None
            del band, values  # before the next row is computed: one tile-row band in memory at a time
            yield SceneStep(row + 1, self.tiles_done, log.to_bytes() if log is not None else None)

    def _write_band(self, dst: RecordingWriter, group: BandGroup, stats: list[BandStats], window: Window,
                    values: np.ndarray) -> None:
        if group.kind == "mono":
            values = values.mean(axis=0, keepdims=True)
        out = np.stack([st.denormalise(v, self.dtype) for st, v in zip(stats, values, strict=True)])
        self._write(dst, group, out, window)

    def _write_sigma(self, dst: RecordingWriter, group: BandGroup, window: Window, sigma: np.ndarray) -> None:
        """The map's rows: invalid (nodata, masked or NaN, as the image) wherever a band it describes is."""
        valid = self._hr_valid(window, group.source).all(axis=0, keepdims=True)
        self._write_valid(dst, sigma, valid, (self.sigma_band or 1,), window)
        if self._sigma_file and self._has_mask:  # in the product, the image's dataset mask covers it
            dst.write_mask(valid[0].astype(np.uint8) * 255, window=window)

    def _sigma_group(self) -> BandGroup | None:
        """The bands the uncertainty map describes: the first the model sees (the colour triplet if any)."""
        if not self.options.uncertainty:
            return None
        group = next((g for g in self.plan.groups if g.kind != "nearest"), None)
        if group is None:
            raise RasterError("these bands are all alpha (masks the model does not see): there is no "
                              "uncertainty map to make")
        return group

    def band_stats(self) -> dict[int, BandStats]:
        """Every model band's normalisation (given as ``band_stats`` to resume a job with)."""
        return dict(self._stats())

    def _stats(self) -> dict[int, BandStats]:
        """Every model band's statistics, read once for the whole plan."""
        if self._band_stats is None:
            self._band_stats = scene_stats(self.src, self.plan.model_bands)
        return self._band_stats

    def _copy_nearest(self, dst: RecordingWriter, group: BandGroup) -> None:
        """Bands that are masks (alpha) are not intensities: each output pixel takes its source pixel's value."""
        s, chunk = self.options.scale, self.pipeline.tile_size
        for y in range(0, self.src.height, chunk):
            window = Window(0, y, self.src.width, min(chunk, self.src.height - y))
            values = self.src.read(list(group.source), window=window)
            out = values.repeat(s, axis=1).repeat(s, axis=2)
            self._write(dst, group, out, Window(0, y * s, self.src.width * s, out.shape[1]))

    def _write(self, dst: RecordingWriter, group: BandGroup, out: np.ndarray, window: Window) -> None:
        """Write HR rows of ``group``'s bands, and the dataset's mask with the first group's."""
        valid = self._hr_valid(window, group.source)
        self._write_valid(dst, out, valid, group.target, window)
        if group is self.plan.groups[0] and self._has_mask:
            dst.write_mask(valid.all(axis=0).astype(np.uint8) * 255, window=window)

    def _write_valid(self, dst: RecordingWriter, out: np.ndarray, valid: np.ndarray, indexes: tuple[int, ...],
                     window: Window) -> None:
        """Pixels whose source pixel is nodata (or masked) become nodata (or masked), in the source's rule."""
        if self.src.nodata is not None:
            _keep_off_nodata(out, valid, self.src.nodata)
            out[~valid] = self.src.nodata
        elif self.dtype.kind == "f":
            out[~valid] = np.nan
        dst.write(out.astype(dst.dtypes[0], copy=False), indexes=list(indexes), window=window)

    def _hr_valid(self, window: Window, bands: tuple[int, ...]) -> np.ndarray:
        """:meth:`_valid` of the source pixels under the HR rows of ``window``, at the output's resolution."""
        s = self.options.scale
        lr_window = Window(0, window.row_off // s, self.src.width, window.height // s)
        return self._valid(lr_window, bands).repeat(s, axis=1).repeat(s, axis=2)

    @property
    def _has_mask(self) -> bool:
        """The source masks pixels without a nodata value (an internal mask or an alpha band)."""
        return self.src.nodata is None and any(
            MaskFlags.per_dataset in flags or MaskFlags.alpha in flags for flags in self.src.mask_flag_enums)

    def _valid(self, window: Window, bands: tuple[int, ...], values: np.ndarray | None = None) -> np.ndarray:
        """``(bands, h, w)`` bool: each band has a value there (not its nodata, not masked, finite); like
        GDAL's per-band masks, one band's nodata does not void the others'. ``values``: those bands' pixels
        in ``window`` when already read (float data is read again otherwise)."""
        valid = self.src.read_masks(list(bands), window=window) > 0
        if self.dtype.kind == "f":
            valid &= np.isfinite(self.src.read(list(bands), window=window) if values is None else values)
        return valid

    # -- the product's description ----------------------------------------------------------------

    def _profile(self) -> dict[str, Any]:
        src, s = self.src, self.options.scale
        profile = {"driver": "GTiff", "width": src.width * s, "height": src.height * s,
                   "count": len(self.plan.source) + bool(self.sigma_band), "dtype": self.product_dtype.name,
                   "nodata": src.nodata,
                   "crs": src.crs, "tiled": False, "blockysize": s, "compress": "deflate", "interleave": "band",
                   "bigtiff": "if_safer"}
        if src.crs is not None or src.transform != Affine.identity():
            profile["transform"] = src.transform * Affine.scale(1 / s)  # same origin and bounds, also rotated
        return profile

    def _sigma_profile(self) -> dict[str, Any]:
        """The map of its own: the product's grid, one float32 band."""
        profile = self._profile()
        profile.update(count=1, dtype="float32")
        return profile

    def _copy_metadata(self, dst: DatasetWriter) -> None:
        src, bands = self.src, self.plan.source
        extra = 1 if self.sigma_band else 0  # the map's band, described by _describe_sigma
        dst.update_tags(**src.tags(), **self.provenance())
        dst.colorinterp = [src.colorinterp[b - 1] for b in bands] + [ColorInterp.undefined] * extra
        dst.scales = [src.scales[b - 1] for b in bands] + [1.0] * extra
        dst.offsets = [src.offsets[b - 1] for b in bands] + [0.0] * extra
        dst.units = [src.units[b - 1] or "" for b in bands] + [""] * extra
        for index, band in enumerate(bands, start=1):
            dst.update_tags(index, **src.tags(band))
            if src.descriptions[band - 1]:
                dst.set_band_description(index, src.descriptions[band - 1])
        if self.sigma_band:
            self._describe_sigma(dst, self.sigma_band)

    def _describe_sigma(self, dst: DatasetWriter, band: int) -> None:
        assert self.sigma_group is not None  # only called with a map
        describe_uncertainty(dst, band, self.sigma_group.source)
        dst.update_tags(HNDSR_UNCERTAINTY_SAMPLES=str(self.options.uncertainty_samples if self.options.ddim_steps else 0))

    def provenance(self) -> dict[str, str]:
        model = self.pipeline.model
        return {"HNDSR_MODEL": "hndsr", "HNDSR_MODEL_VERSION": model.version, "HNDSR_SCALE": str(self.options.scale),
                "HNDSR_DDIM_STEPS": str(self.options.ddim_steps), "HNDSR_SEED": "none" if self.seed is None else str(self.seed),
                "HNDSR_SOURCE_BANDS": ",".join(map(str, self.plan.source)),
                "HNDSR_CONSISTENCY": str(self.options.consistency).lower()}


def _keep_off_nodata(out: np.ndarray, valid: np.ndarray, nodata: float) -> None:
    """A valid pixel whose value lands on the nodata value (a dark pixel rounded to 0, say) moves one step
    towards the data, so that no valid pixel reads as nodata."""
    if np.isnan(nodata):
        return
    hits = (out == nodata) & valid  # out and valid: (bands, h, w)
    if not hits.any():
        return
    if out.dtype.kind == "f":
        out[hits] = np.nextafter(out.dtype.type(nodata), out.dtype.type(np.inf))
    else:
        out[hits] = nodata + 1 if nodata < np.iinfo(out.dtype).max else nodata - 1


def _check_source(src: DatasetReader, max_pixels: int | None, max_bands: int | None) -> None:
    try:
        check_pixels(src.width, src.height, max_pixels)
    except ImageTooLarge as exc:
        raise RasterTooLarge(str(exc)) from None
    if src.count < 1:
        raise RasterError("raster has no bands")
    if max_bands is not None and src.count > max_bands:
        raise RasterTooLarge(f"raster has {src.count:,} bands; the limit is {max_bands}")
    kinds = set(src.dtypes)
    if not kinds <= SUPPORTED_DTYPES:
        raise RasterError(f"unsupported data type {', '.join(sorted(kinds - SUPPORTED_DTYPES))}; supported: "
                          + ", ".join(sorted(SUPPORTED_DTYPES)))
    if len(kinds) > 1:
        raise RasterError(f"bands of different data types ({', '.join(sorted(kinds))}) are not supported")
    nbits = src.tags(ns="IMAGE_STRUCTURE").get("NBITS") or src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS", 8)
    if int(nbits) < 8:
        raise RasterError("rasters of fewer than 8 bits per sample (bit masks) are not imagery")
    if ColorInterp.palette in src.colorinterp:
        raise RasterError("a paletted raster holds categories, not intensities: super-resolution would invent "
                          "classes. Expand it to RGB first (gdal_translate -expand rgb) or resample it by "
                          "nearest neighbour")


@contextlib.contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """A full disk as ``OSError(ENOSPC)``, whatever GDAL made of it.

    libtiff reports the failed ``write()``'s errno only in a message of its own; the exception GDAL and
    rasterio raise says "Write error at scanline N". A write that failed on a filesystem left with less
    than ``FULL_BELOW_BYTES`` free failed for space: callers can then say so (a job's ``disk_full``).
    """
    try:
        yield
    except (RasterioError, CPLE_BaseError) as exc:
        free = shutil.disk_usage(path.parent).free
        if free < FULL_BELOW_BYTES:
            raise OSError(errno.ENOSPC, f"no space left on the device of {path.parent} ({free:,} bytes free)") from exc
        raise


@dataclass(frozen=True)
class _Pass:
    """One model pass of :meth:`SceneUpscaler.steps`: its band group, the product's first tile row it writes,
    and how the rows before ``resume_rows`` are replayed."""

    group: BandGroup
    first_row: int
    resume_rows: int
    load_row: RowLoader | None
    record: bool


def working_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.part")


def uncertainty_path(product: Path) -> Path:
    """Where a product's uncertainty map goes when it is a file of its own: beside it, ``<stem>.uncertainty.tif``."""
    return product.with_name(f"{product.stem}.uncertainty.tif")


def describe_uncertainty(dst: DatasetWriter, band: int, source_bands: tuple[int, ...]) -> None:
    """Name the map's band, and say in its tags what it measures (so that a file read alone still says it)."""
    dst.set_band_description(band, UNCERTAINTY)
    dst.update_tags(band, HNDSR_UNCERTAINTY="standard deviation of the BT.601 luma of source bands "
                    f"{','.join(map(str, source_bands))}, each mapped to 0..1 as the model sees it")


def _to_cog(part: Path, dst: Path) -> None:
    """A striped working file -> COG at ``dst``, atomically."""
    staging = dst.with_name(f".{dst.name}.cog")
    try:
        with write_errors(staging), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            rasterio.shutil.copy(part, staging, driver="COG", **COG_OPTIONS)
        staging.replace(dst)
    finally:
        staging.unlink(missing_ok=True)


def is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def array_to_tiff(image: np.ndarray, uncertainty: np.ndarray | None = None) -> bytes:
    """A plain ``(H, W, 3) uint8`` image (no georeferencing) as a compressed tiled TIFF; with ``uncertainty``
    (``(H, W)`` float32) that map follows as a 4th band and the file is float32, the image's values still 0..255."""
    bands = image.transpose(2, 0, 1)
    if uncertainty is None:
        return _plain_tiff(bands)
    return _plain_tiff(np.concatenate([bands.astype(np.float32), uncertainty[None]]),
                       [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined])


def uncertainty_to_tiff(uncertainty: np.ndarray) -> bytes:
    """A plain ``(H, W)`` float32 uncertainty map (of a 3-band image) as a one-band compressed tiled TIFF."""
    return _plain_tiff(uncertainty[None], [ColorInterp.gray])


def _plain_tiff(bands: np.ndarray, colorinterp: list[ColorInterp] | None = None) -> bytes:
    """``(count, H, W)`` -> COG bytes; with ``colorinterp``, the last band is an uncertainty map."""
    count, height, width = bands.shape
    buffer = io.BytesIO()
    with MemoryFile() as mem:
        with mem.open(driver="COG", width=width, height=height, count=count, dtype=bands.dtype.name,
                      **COG_OPTIONS) as dst:
            dst.write(bands)
            if colorinterp is not None:
                dst.colorinterp = colorinterp
                describe_uncertainty(dst, count, (1, 2, 3))
        buffer.write(mem.read())
    return buffer.getvalue()
