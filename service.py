"""HNDSR BentoML service: APIs, start-up and shutdown. Wiring only; the work lives in hndsr_service/.

Request flow: middleware (queue depth, rate limit, payload size) -> schemas (typed parameters)
-> imaging.decode_image (pixel guard) -> inference.InferenceRunner (slots, deadline, cancellation)
-> imaging.encode_png -> metrics.
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
import uuid
from pathlib import Path
from typing import Annotated, Any

import anyio
import bentoml
import numpy as np
from bentoml.exceptions import NotFound
from bentoml.validators import ContentType
from starlette.responses import JSONResponse, Response

from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.weights import WeightsError
from hndsr_service import imaging, metrics, middleware, ratelimit, uploads
from hndsr_service.errors import ServiceError, error_response
from hndsr_service.inference import InferenceRunner
from hndsr_service.model_store import WEIGHTS_FILE
from hndsr_service.probes import ServiceState, build_probe_app
from hndsr_service.schemas import Base64Image, DdimSteps, InferMetadata, InferResponse, ScaleFactor, Seed
from hndsr_service.settings import get_settings

logger = logging.getLogger("bentoml.hndsr")
settings = get_settings()
state = ServiceState(settings=settings, in_flight=middleware.InFlight())
shared_limits = ratelimit.connect(settings.redis_url)  # None: in-process limits
uploads.install()

PngFile = Annotated[Path, ContentType("image/png")]


@bentoml.asgi_app(build_probe_app(state), path="/")
@bentoml.service(
    name="hndsr",
    resources={"gpu": 1},
    traffic={
        "concurrency": settings.max_concurrent,
        # BentoML's own timeout must not pre-empt the service's designed 504s.
        "timeout": settings.request_timeout_s + settings.inference_timeout_s + 30,
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

    def __init__(self) -> None:
        self.runner = InferenceRunner(state)
        # In a server worker this runs on the main thread; embedded (tests, notebooks) it may not.
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            state.pipeline = HNDSRPipeline.from_pretrained(
                self._weights_path(), device=settings.device,
                tile_size=settings.tile_size, tile_overlap=settings.tile_overlap)
            state.pipeline.upscale(np.zeros((32, 32, 3), np.uint8), 4, ddim_steps=1, seed=0)
            state.warmed = True
            logger.info("HNDSR %s ready on %s", state.pipeline.version, state.device)
        except (WeightsError, NotFound, RuntimeError) as exc:
            state.failure = f"model not loaded: {exc}"
            logger.error("%s", state.failure)

    def _weights_path(self) -> Path:
        if settings.weights_path is not None:
            return settings.weights_path
        return Path(self.bento_model.path_of(WEIGHTS_FILE))

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """Fail readiness and refuse new inferences at once; hand over to the server's own shutdown
        once in-flight requests are done (at most DRAIN_TIMEOUT_S)."""
        logger.info("SIGTERM: draining %d in-flight requests", state.in_flight.count)
        previous = self._previous_sigterm
        state.drain(settings.drain_timeout_s, lambda: previous(signum, frame) if callable(previous) else None)

    def __is_alive__(self) -> bool:
        return state.alive

    def __is_ready__(self) -> bool:
        return state.ready

    @bentoml.api(route="/infer")
    async def infer(
        self,
        image: Base64Image,
        scale_factor: ScaleFactor = 4,
        ddim_steps: DdimSteps = 0,
        seed: Seed = None,
        return_metadata: bool = True,
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> InferResponse:
        """Upscale a base64 image; returns a base64 PNG with its size and metadata."""
        request_id = _request_id(ctx)
        try:
            data = await anyio.to_thread.run_sync(imaging.decode_base64, image)
            output, meta = await self._upscale(data, scale_factor, ddim_steps, seed, ctx, request_id)
            encoded = await anyio.to_thread.run_sync(lambda: base64.b64encode(imaging.encode_png(output)).decode())
        except ServiceError as exc:
            return _failure(ctx, exc, request_id)
        height, width = output.shape[:2]
        body = InferResponse(image=encoded, width=width, height=height, scale_factor=scale_factor,
                             metadata=meta if return_metadata else None)
        return JSONResponse(body.model_dump(mode="json"), headers={"x-request-id": request_id})  # type: ignore[return-value]

    @bentoml.api(route="/upscale")
    async def upscale(
        self,
        image: Annotated[Path, ContentType("image/*")],
        scale_factor: ScaleFactor = 4,
        ddim_steps: DdimSteps = 0,
        seed: Seed = None,
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> PngFile:
        """Upscale an uploaded image file (multipart field ``image``); returns the PNG itself."""
        request_id = _request_id(ctx)
        try:
            if not ctx.request.headers.get("content-type", "").startswith("multipart/form-data"):
                raise ServiceError(415, "unsupported_media_type", "send the image as multipart/form-data")
            data = await anyio.to_thread.run_sync(image.read_bytes)
            output, meta = await self._upscale(data, scale_factor, ddim_steps, seed, ctx, request_id)
            png = await anyio.to_thread.run_sync(imaging.encode_png, output)
        except ServiceError as exc:
            return _failure(ctx, exc, request_id)  # type: ignore[return-value]
        headers = {"x-request-id": request_id, "x-hndsr-latency-ms": str(meta.latency_ms),
                   "x-hndsr-seed": str(meta.seed)}
        return Response(png, media_type="image/png", headers=headers)  # type: ignore[return-value]

    async def _upscale(self, data: bytes, scale: int, ddim_steps: int, seed: int | None, ctx: bentoml.Context,
                       request_id: str) -> tuple[np.ndarray, InferMetadata]:
        pipeline = state.pipeline
        if pipeline is None or not state.alive:
            raise ServiceError(503, "model_unavailable", state.not_ready_reason(), retry_after=30)
        image = await anyio.to_thread.run_sync(imaging.decode_image, data, settings.max_image_pixels)
        height, width = image.shape[:2]
        metrics.INPUT_PIXELS.observe(width * height)
        imaging.check_output(width, height, scale, settings.max_output_pixels)
        try:
            result, seconds = await self.runner.run(pipeline, image, scale, ddim_steps, seed,
                                                    ctx.request.is_disconnected)
        except ServiceError:
            raise
        except Exception as exc:
            logger.exception("request %s failed", request_id)
            raise ServiceError(500, "internal_error", f"inference failed (request id {request_id})") from exc
        meta = InferMetadata(
            input_size=(width, height), output_size=(width * scale, height * scale), scale_factor=scale,
            ddim_steps=ddim_steps, seed=result.seed, latency_ms=round(seconds * 1000, 1), device=state.device,
            model="hndsr", model_version=pipeline.version, tiles=result.tiles, request_id=request_id)
        return result.image, meta


def _failure(ctx: bentoml.Context, error: ServiceError, request_id: str) -> JSONResponse:
    # BentoML stamps ctx.response.status_code over a returned Response when the API takes ctx.
    ctx.response.status_code = error.status
    return error_response(error, request_id=request_id)


def _request_id(ctx: bentoml.Context) -> str:
    supplied = ctx.request.headers.get("x-request-id", "")
    return supplied if supplied.isascii() and supplied.isprintable() and 0 < len(supplied) <= 64 else uuid.uuid4().hex


for guard, options in (
    (middleware.RequestMetricsMiddleware, {}),
    (middleware.ApiKeyMiddleware, {"settings": settings}),
    (middleware.QueueDepthMiddleware, {"settings": settings, "in_flight": state.in_flight, "shared": shared_limits}),
    (middleware.RateLimitMiddleware, {"settings": settings, "shared": shared_limits}),
    (middleware.PayloadSizeMiddleware, {"settings": settings}),
    (middleware.ErrorEnvelopeMiddleware, {}),
):
    HNDSR.add_asgi_middleware(guard, **options)
