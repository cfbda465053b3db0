"""What a synchronous request makes: the super-resolved file in the format the client asked for.

A TIFF/GeoTIFF input, or any image with ``bands`` selected, goes through the raster product
(georeferencing, dtype, bands and nodata kept; a COG, or a quick-look of it in another format); any other
image goes through the RGB pipeline.
Decoding and guards run before a slot is taken; the model runs in a slot, cancellable.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hndsr_model.data import to_rgb8
from hndsr_model.pipeline import CancelCheck, HNDSRPipeline
from hndsr_raster import SceneOptions, SceneUpscaler, is_tiff, open_raster

from . import imaging, metrics
from .inference import InferenceRunner
from .settings import Settings
from .threads import run_in_thread


@dataclass(frozen=True)
class ProductRequest:
    data: bytes
    scale: int
    ddim_steps: int
    seed: int | None
    bands: tuple[int, ...] | None
    output_format: str | None  # the form/JSON field; None = negotiate
    accept: str | None  # the Accept header (``/upscale`` only)


@dataclass(frozen=True)
class Product:
    content: bytes
    media_type: str
    input_size: tuple[int, int]
    scale: int
    tiles: int
    seed: int | None

    @property
    def output_size(self) -> tuple[int, int]:
        return self.input_size[0] * self.scale, self.input_size[1] * self.scale


async def make_product(pipeline: HNDSRPipeline, runner: InferenceRunner, settings: Settings, request: ProductRequest,
                       disconnected: Callable[[], Awaitable[bool]]) -> tuple[Product, float]:
    """Returns the product and the inference time in seconds."""
    with imaging.image_errors():
        # Bands are a raster's: a PNG, JPEG or WebP asked for some is read as the 3-band raster it is.
        if is_tiff(request.data) or request.bands:
            return await _raster_product(pipeline, runner, settings, request, disconnected)
        return await _image_product(pipeline, runner, settings, request, disconnected)


async def _image_product(pipeline: HNDSRPipeline, runner: InferenceRunner, settings: Settings,
                         request: ProductRequest, disconnected: Callable[[], Awaitable[bool]]) -> tuple[Product, float]:
    image = await run_in_thread(imaging.decode_image, request.data, settings.max_image_pixels)
    height, width = image.shape[:2]
    _admit(width, height, request.scale, settings)
    fmt = imaging.output_format(request.output_format, request.accept, input_is_tiff=False)
    result, seconds = await runner.run(
        lambda cancel: pipeline.upscale(image, request.scale, request.ddim_steps, request.seed, should_cancel=cancel),
        disconnected)
    content = await run_in_thread(imaging.encode, result.image, fmt)
    return Product(content, imaging.MEDIA_TYPES[fmt], (width, height), request.scale, result.tiles,
                   result.seed), seconds


@dataclass(frozen=True)
class _Encoded:
    content: bytes
    tiles: int


async def _raster_product(pipeline: HNDSRPipeline, runner: InferenceRunner, settings: Settings,
                          request: ProductRequest, disconnected: Callable[[], Awaitable[bool]]
                          ) -> tuple[Product, float]:
    fmt = imaging.output_format(request.output_format, request.accept, input_is_tiff=is_tiff(request.data))
    options = SceneOptions(request.scale, request.ddim_steps, request.seed, request.bands)
    with open_raster(request.data) as src:
        upscaler = SceneUpscaler(pipeline, src, options, settings.max_image_pixels, settings.max_bands)
        _admit(src.width, src.height, request.scale, settings)

        def work(cancel: CancelCheck) -> _Encoded:
            with tempfile.TemporaryDirectory(prefix="hndsr-") as tmp:
                out = Path(tmp) / "product.tif"
                upscaler.write(out, cancel)
                content = out.read_bytes() if fmt == "tiff" else imaging.encode(quicklook(out), fmt)
            return _Encoded(content, upscaler.tiles_total)

        result, seconds = await runner.run(work, disconnected)
        return Product(result.content, imaging.MEDIA_TYPES[fmt], (src.width, src.height), request.scale,
                       result.tiles, upscaler.seed), seconds


def _admit(width: int, height: int, scale: int, settings: Settings) -> None:
    metrics.INPUT_PIXELS.observe(width * height)
    imaging.check_output(width, height, scale, settings.max_output_pixels)


def quicklook(product: Path) -> np.ndarray:
    """An 8-bit RGB view of a raster product (for PNG/JPEG/WebP answers to a TIFF input)."""
    with open_raster(product) as src:
        return to_rgb8(np.moveaxis(src.read(), 0, -1))
