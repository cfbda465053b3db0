"""What a synchronous request makes: the super-resolved file in the format the client asked for.

A TIFF/GeoTIFF input, or any image with ``bands`` selected, goes through the raster product
(georeferencing, dtype, bands and nodata kept; a COG, or a quick-look of it in another format); any other
image goes through the RGB pipeline.
Decoding and guards run before a slot is taken; the model runs in a slot, cancellable.

The uncertainty map, when asked for, is either the product's last band (``/upscale``: only a TIFF can
carry it) or a one-band TIFF of its own beside the product (``/infer``), whose bytes stay those it has
without the map.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hndsr_model.data import to_rgb8
from hndsr_model.options import SCALES, UpscaleOptions
from hndsr_model.pipeline import CancelCheck, HNDSRPipeline
from hndsr_raster import SceneUpscaler, is_tiff, open_raster, uncertainty_path, uncertainty_to_tiff

from . import imaging, metrics
from .errors import ServiceError
from .inference import InferenceRunner
from .settings import Settings
from .speed import Cost, SpeedEstimate, cost_of
from .threads import run_in_thread

WARM_UP_SIDE = 512  # a larger TILE_SIZE would make start-up slow for no better estimate (it counts pixels)


@dataclass(frozen=True)
class ProductRequest:
    data: bytes
    options: UpscaleOptions
    output_format: str | None  # the form/JSON field; None = negotiate
    accept: str | None  # the Accept header (``/upscale`` only)
    uncertainty_file: bool = False  # the map as a TIFF of its own (``/infer``), not as the product's last band


@dataclass(frozen=True)
class Product:
    content: bytes
    media_type: str
    input_size: tuple[int, int]
    scale: int
    tiles: int
    seed: int | None
    uncertainty: bytes | None = None  # the map as a one-band float32 TIFF, when it is a file of its own

    @property
    def output_size(self) -> tuple[int, int]:
        return self.input_size[0] * self.scale, self.input_size[1] * self.scale


async def make_product(pipeline: HNDSRPipeline, runner: InferenceRunner, settings: Settings, request: ProductRequest,
                       disconnected: Callable[[], Awaitable[bool]]) -> tuple[Product, float]:
    """Returns the product and the inference time in seconds."""
    check_uncertainty(pipeline, request.options)
    with imaging.image_errors():
        # Bands are a raster's: a PNG, JPEG or WebP asked for some is read as the 3-band raster it is.
        if is_tiff(request.data) or request.options.bands:
            return await _raster_product(pipeline, runner, settings, request, disconnected)
        return await _image_product(pipeline, runner, settings, request, disconnected)


async def _image_product(pipeline: HNDSRPipeline, runner: InferenceRunner, settings: Settings,
                         request: ProductRequest, disconnected: Callable[[], Awaitable[bool]]) -> tuple[Product, float]:
    image = await run_in_thread(imaging.decode_image, request.data, settings.max_image_pixels)
    height, width = image.shape[:2]
    options = request.options
    _admit(width, height, options.scale, settings)
    fmt = _format(request, input_is_tiff=False)
    result, seconds = await runner.run(
        lambda cancel: pipeline.upscale(image, options, should_cancel=cancel), disconnected,
        _cost(pipeline, options, pipeline.count_tiles(height, width), height, width))
    in_band = None if request.uncertainty_file else result.uncertainty
    content = await run_in_thread(imaging.encode, result.image, fmt, in_band)
    own_file = None
    if request.uncertainty_file and result.uncertainty is not None:
        own_file = await run_in_thread(uncertainty_to_tiff, result.uncertainty)
    return Product(content, imaging.MEDIA_TYPES[fmt], (width, height), options.scale, result.tiles,
                   result.seed, own_file), seconds


@dataclass(frozen=True)
class _Encoded:
    content: bytes
    tiles: int
    uncertainty: bytes | None


async def _raster_product(pipeline: HNDSRPipeline, runner: InferenceRunner, settings: Settings,
                          request: ProductRequest, disconnected: Callable[[], Awaitable[bool]]
                          ) -> tuple[Product, float]:
    fmt = _format(request, input_is_tiff=is_tiff(request.data))
    with open_raster(request.data) as src:
        upscaler = SceneUpscaler(pipeline, src, request.options, uncertainty_file=request.uncertainty_file,
                                 max_pixels=settings.max_image_pixels, max_bands=settings.max_bands)
        _admit(src.width, src.height, request.options.scale, settings)

        def work(cancel: CancelCheck) -> _Encoded:
            with tempfile.TemporaryDirectory(prefix="hndsr-") as tmp:
                out = Path(tmp) / "product.tif"
                upscaler.write(out, cancel)
                content = out.read_bytes() if fmt == "tiff" else imaging.encode(quicklook(out), fmt)
                own_file = uncertainty_path(out)
                uncertainty = own_file.read_bytes() if own_file.exists() else None
            return _Encoded(content, upscaler.tiles_total, uncertainty)

        cost = _cost(pipeline, request.options, upscaler.tiles_total, src.height, src.width)
        result, seconds = await runner.run(work, disconnected, cost)
        return Product(result.content, imaging.MEDIA_TYPES[fmt], (src.width, src.height), request.options.scale,
                       result.tiles, upscaler.seed, result.uncertainty), seconds


def warm_up(pipeline: HNDSRPipeline, speed: SpeedEstimate) -> None:
    """Every scale's engine graph loaded (built, the first time on a machine), then a whole tile (at most 512
    pixels a side) at x4 with a diffusion step, twice, before the first request: the first pays the framework's
    one-time costs (kernels chosen, memory pools), the second's time starts the speed estimate."""
    pipeline.engine.prepare(SCALES)
    options, side = UpscaleOptions(4, ddim_steps=1, seed=0), min(pipeline.tile_size, WARM_UP_SIDE)
    image = np.zeros((side, side, 3), np.uint8)
    pipeline.upscale(image, options)
    started = time.perf_counter()
    result = pipeline.upscale(image, options)
    cost = cost_of(options, result.tiles, side, side, whole_tiles=True)
    speed.observe(cost, time.perf_counter() - started)


def variant_pipeline(pipelines: dict[str, HNDSRPipeline], variant: str) -> HNDSRPipeline:
    """The loaded pipeline of ``variant``; one this server did not load is the client's 422, not a 500."""
    try:
        return pipelines[variant]
    except KeyError:
        raise ServiceError(422, "invalid_request", f"model: {variant!r} is not served here; this server loaded "
                           f"{', '.join(sorted(pipelines))}") from None


def check_uncertainty(pipeline: HNDSRPipeline, options: UpscaleOptions) -> None:
    """Refuse a map the loaded weights cannot make before any work (the pipeline would refuse it only in a slot)."""
    if options.uncertainty and not pipeline.has_uncertainty:
        raise ServiceError(422, "invalid_request", f"return_uncertainty: the model {pipeline.version} has no "
                           "uncertainty head; ask without return_uncertainty, or for weights that have one "
                           "(model bicubic of hndsr 2.1.0 or later)")


def _format(request: ProductRequest, input_is_tiff: bool) -> str:
    """The output format; a map in the product's own bands needs a TIFF (before any work, too)."""
    fmt = imaging.output_format(request.output_format, request.accept, input_is_tiff)
    if request.options.uncertainty and not request.uncertainty_file and fmt != "tiff":
        raise ServiceError(422, "invalid_request", f"return_uncertainty: a {fmt.upper()} output cannot carry the "
                           "uncertainty map; ask for a TIFF/GeoTIFF output (output_format=tiff or Accept: "
                           "image/tiff), which gets it as a last band, or use /infer, which returns it beside the "
                           "image")
    return fmt


def _cost(pipeline: HNDSRPipeline, options: UpscaleOptions, tiles: int, height: int, width: int) -> Cost:
    tile = pipeline.tile_size
    return cost_of(options, tiles, min(tile, height), min(tile, width), whole_tiles=height >= tile and width >= tile)


def _admit(width: int, height: int, scale: int, settings: Settings) -> None:
    metrics.INPUT_PIXELS.observe(width * height)
    imaging.check_output(width, height, scale, settings.max_output_pixels)


def quicklook(product: Path) -> np.ndarray:
    """An 8-bit view of a raster product (for PNG/JPEG/WebP answers to a TIFF input): grey for one band, else
    RGB of its first three."""
    with open_raster(product) as src:
        view = to_rgb8(np.moveaxis(src.read(), 0, -1))
        return view[..., 0] if src.count == 1 else view
