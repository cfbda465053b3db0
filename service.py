"""HNDSR BentoML service: APIs, start-up and shutdown. Wiring only; the work lives in hndsr_service/.

Request flow: guards (queue depth, rate limit, payload size, body timeout) -> schemas (typed parameters)
-> products (decode and guards: imaging for images, hndsr_raster for TIFF/GeoTIFF)
-> inference.InferenceRunner (slots, deadline, cancellation) -> encode -> metrics.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import NotFound
from bentoml.validators import ContentType

from hndsr_model.options import DEFAULT_CONSISTENCY, DEFAULT_UNCERTAINTY_SAMPLES, DEFAULT_VARIANT
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.weights import WeightsError, variant_paths
from hndsr_service import guards, imaging, malformed, metrics, openapi, ratelimit, uploads
from hndsr_service.errors import ServiceError, api_errors, request_id
from hndsr_service.inference import InferenceRunner
from hndsr_service.jobs.files import open_files
from hndsr_service.jobs.routes import job_routes
from hndsr_service.jobs.store import open_store
from hndsr_service.jobs.worker import JobWorker
from hndsr_service.probes import build_probe_app
from hndsr_service.products import Product, ProductRequest, make_product, variant_pipeline, warm_up
from hndsr_service.schemas import (
    Bands,
    Base64Image,
    Consistency,
    DdimSteps,
    InferMetadata,
    InferResponse,
    ModelVariant,
    OutputFormat,
    ReturnMetadata,
    ReturnUncertainty,
    ScaleFactor,
    Seed,
    UncertaintySamples,
    UpscaleFields,
    strict_apis,
)
from hndsr_service.settings import get_settings
from hndsr_service.state import ServiceState
from hndsr_service.threads import run_in_thread

logger = logging.getLogger("bentoml.hndsr")
settings = get_settings()
metrics.setup_multiprocess_store()  # before `bentoml serve` picks the folder its metrics live in
state = ServiceState(settings)
runner = InferenceRunner(state)
jobs = JobWorker(state, runner, open_store(settings.jobs_database_url, settings.jobs_dir),
                 open_files(settings.jobs_storage_url, settings.jobs_dir))
shared_limits = ratelimit.connect(settings.redis_url)  # None: in-process limits
uploads.install()
malformed.install()

ImageFile = Annotated[Path, ContentType("image/*")]


@strict_apis
@bentoml.asgi_app(build_probe_app(state, job_routes(jobs), [jobs.gauges]), path="/")
@bentoml.service(
    name="hndsr",
    resources={"gpu": 1},
    traffic={
        "concurrency": settings.max_concurrent,
        # BentoML's own timeout must not pre-empt the service's designed 504s (the model stops at the next
        # tile after the deadline, then the answer is encoded).
        "timeout": settings.request_timeout_s + 30,
    },
    http={
        "host": settings.host,
        "port": settings.port,
        "cors": {"enabled": bool(settings.cors_origins), "access_control_allow_origins": list(settings.cors_origins),
                 "access_control_allow_credentials": False,
                 "access_control_allow_methods": ["GET", "POST", "OPTIONS"]},
    },
    # hndsr_* metrics are served by the probe app; BentoML's own would label every raw path.
    metrics={"enabled": False},
)
class HNDSR:
    bento_model = bentoml.models.BentoModel(settings.model_tag)

    _previous_sigterm: Any = None
    _jobs_task: asyncio.Future | None = None
    _settle_task: asyncio.Future | None = None

    def __init__(self) -> None:
        self.runner = runner
        # In a server worker this runs on the main thread; embedded (tests, notebooks) it may not.
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            state.model_ready({variant: self._load(path) for variant, path in self._weights_paths().items()})
            logger.info("HNDSR %s ready on %s, the operator in %s", ", ".join(
                f"{variant} {p.version}" for variant, p in state.pipelines.items()), state.device,
                state.pipeline.engine.name if state.pipeline else "nothing")
        except (WeightsError, NotFound, RuntimeError) as exc:  # EngineUnavailable is a RuntimeError
            state.model_failed(f"model not loaded: {exc}")
            logger.error("%s", state.failure)

    @bentoml.on_startup
    async def start_background_tasks(self) -> None:
        """The scene-job worker lives on the server's event loop, beside the APIs it shares slots with; so does
        the settling of the heap once the load stops."""
        self._jobs_task = asyncio.ensure_future(jobs.run_forever())
        self._settle_task = asyncio.ensure_future(runner.settle_when_idle())

    def _weights_paths(self) -> dict[str, Path]:
        """The weights of every variant to serve: ``WEIGHTS_PATH`` alone as the default, else each variant the
        stored model holds (the default always: its absence is the model's failure to load)."""
        if settings.weights_path is not None:
            return {DEFAULT_VARIANT: settings.weights_path}
        return variant_paths(Path(self.bento_model.path))

    @staticmethod
    def _load(weights: Path) -> HNDSRPipeline:
        pipeline = HNDSRPipeline.from_pretrained(
            weights, device=settings.device, tile_size=settings.tile_size, tile_overlap=settings.tile_overlap,
            tile_batch=settings.tile_batch, batch_wait_ms=settings.batch_wait_ms, engine=settings.inference_engine)
        warm_up(pipeline, state.speed)
        return pipeline

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """Fail readiness and refuse new inferences at once; hand over to the server's own shutdown
        once in-flight requests are done (at most DRAIN_TIMEOUT_S)."""
        logger.info("SIGTERM: draining %d in-flight requests", state.in_flight)
        previous = self._previous_sigterm
        jobs.interrupt()
        state.drain(settings.drain_timeout_s, lambda: previous(signum, frame) if callable(previous) else None)

    def __is_alive__(self) -> bool:
        return state.alive

    def __is_ready__(self) -> bool:
        return state.ready

    @bentoml.api(route="/infer")
    @api_errors
    async def infer(
        self,
        image: Base64Image,
        scale_factor: ScaleFactor = 4,
        ddim_steps: DdimSteps = 0,
        seed: Seed = None,
        output_format: OutputFormat = None,
        bands: Bands = None,
        return_metadata: ReturnMetadata = True,
        return_uncertainty: ReturnUncertainty = False,
        uncertainty_samples: UncertaintySamples = DEFAULT_UNCERTAINTY_SAMPLES,
        model: ModelVariant = DEFAULT_VARIANT,
        consistency: Consistency = DEFAULT_CONSISTENCY,
        *,
        ctx: bentoml.Context,
    ) -> InferResponse:
        """Upscale a base64 image; returns the base64 file (PNG, or GeoTIFF for a TIFF input) and metadata, and
        with ``return_uncertainty`` the uncertainty map as a base64 one-band float32 TIFF."""
        options = UpscaleFields.pick(locals()).options()
        data = await run_in_thread(imaging.decode_base64, image)
        product, meta = await self._produce(
            ProductRequest(data, options, output_format, None, uncertainty_file=True), ctx)
        encoded = await run_in_thread(_base64, product.content)
        uncertainty = await run_in_thread(_base64, product.uncertainty) if product.uncertainty else None
        width, height = product.output_size
        return InferResponse(image=encoded, media_type=product.media_type, width=width, height=height,
                             scale_factor=scale_factor, metadata=meta if return_metadata else None,
                             uncertainty=uncertainty)

    @bentoml.api(route="/upscale")
    @api_errors
    async def upscale(
        self,
        image: ImageFile,
        scale_factor: ScaleFactor = 4,
        ddim_steps: DdimSteps = 0,
        seed: Seed = None,
        output_format: OutputFormat = None,
        bands: Bands = None,
        return_uncertainty: ReturnUncertainty = False,
        uncertainty_samples: UncertaintySamples = DEFAULT_UNCERTAINTY_SAMPLES,
        model: ModelVariant = DEFAULT_VARIANT,
        consistency: Consistency = DEFAULT_CONSISTENCY,
        *,
        ctx: bentoml.Context,
    ) -> ImageFile:
        """Upscale an uploaded image file (multipart field ``image``); returns the file itself: a GeoTIFF for
        a TIFF/GeoTIFF input, PNG otherwise, or the format of ``output_format`` / the ``Accept`` header. With
        ``return_uncertainty`` a TIFF answer carries the uncertainty map as its last band (float32)."""
        options = UpscaleFields.pick(locals()).options()
        data = await run_in_thread(image.read_bytes)
        product, meta = await self._produce(
            ProductRequest(data, options, output_format, ctx.request.headers.get("accept")), ctx)
        ctx.response.headers.update({"x-hndsr-latency-ms": str(meta.latency_ms), "x-hndsr-seed": str(meta.seed),
                                     "x-hndsr-consistency": str(meta.consistency).lower()})
        # The request's own temporary folder: BentoML streams the file from it, then empties it.
        result = Path(ctx.temp_dir) / f"hndsr-x{scale_factor}{mimetypes.guess_extension(product.media_type)}"
        await run_in_thread(result.write_bytes, product.content)
        return result

    async def _produce(self, request: ProductRequest, ctx: bentoml.Context) -> tuple[Product, InferMetadata]:
        if state.pipeline is None or not state.alive:
            raise ServiceError(503, "model_unavailable", state.not_ready_reason(), retry_after=30)
        options = request.options
        pipeline = variant_pipeline(state.pipelines, options.model)
        product, seconds = await make_product(pipeline, self.runner, settings, request, ctx.request.is_disconnected)
        meta = InferMetadata(
            input_size=product.input_size, output_size=product.output_size, scale_factor=options.scale,
            ddim_steps=options.ddim_steps, seed=product.seed, latency_ms=round(seconds * 1000, 1),
            device=state.device, model="hndsr", model_variant=options.model, model_version=pipeline.version,
            consistency=options.consistency, tiles=product.tiles, request_id=request_id(ctx))
        return product, meta


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


for guard, options in guards.stack(settings, state, shared_limits):
    HNDSR.add_asgi_middleware(guard, **options)
openapi.document(HNDSR)
