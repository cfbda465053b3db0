"""The HTTP API's request parameters and response bodies: one declaration feeds validation, the OpenAPI
page (``openapi.py``) and the Python client.

Parameters are strict: a value of another JSON type is refused, not coerced (``"4"`` is not a scale
factor, ``1`` is not ``true``), and a request naming a field the API does not have is refused with the
field's name, so a client learns at once that a feature it asks for does not exist.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol, TypeVar

from annotated_types import Ge, Le
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict

from hndsr_model.options import (
    DDIM_STEPS,
    DEFAULT_CONSISTENCY,
    DEFAULT_UNCERTAINTY_SAMPLES,
    DEFAULT_VARIANT,
    MAX_SEED,
    SCALES,
    UNCERTAINTY_SAMPLES,
    VARIANTS,
    UpscaleOptions,
    parse_bands,
)

from .errors import ServiceError
from .jobs.model import JobStatus

API_VERSION = "1.0"


def _whole_float(value: Any) -> Any:
    """JSON Schema's ``integer`` includes ``4.0``; so does ours (``4.5`` stays an error)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole_number(low: int, high: int) -> Any:
    """A strict integer in ``[low, high]`` (the bounds before the validator, so the schema shows them)."""
    return Annotated[int, Strict(), Ge(low), Le(high), BeforeValidator(_whole_float)]


ScaleFactor = Annotated[whole_number(SCALES.start, SCALES.stop - 1), Field(
    description=f"Integer upscaling factor, {SCALES.start}-{SCALES.stop - 1}", examples=[4])]
DdimSteps = Annotated[whole_number(DDIM_STEPS.start, DDIM_STEPS.stop - 1), Field(
    description="Diffusion refinement steps; 0 = deterministic neural operator only", examples=[0])]
Seed = Annotated[whole_number(0, MAX_SEED) | None, Field(
    description="Seed for the diffusion noise (same seed, same bytes); null = random", examples=[None])]
OutputFormat = Annotated[Literal["png", "jpeg", "webp", "tiff"] | None, Field(
    description="Output file format; null = the Accept header's (on /upscale), else GeoTIFF for a TIFF input "
                "and PNG otherwise", examples=[None])]
BandList = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,4}(,[1-9][0-9]{0,4})*$")]
# A form field "4" reaches the API as the number 4 (BentoML reads form values as JSON): the same list.
Bands = Annotated[
    BandList | whole_number(1, 99_999) | None, AfterValidator(lambda v: str(v) if isinstance(v, int) else v),
    Field(description="Comma-separated 1-based bands to keep, in output order (e.g. 4,3,2), or one band number; "
                      "a PNG, JPEG or WebP has bands 1-3 (red, green, blue); null = all bands", examples=[None])]
Base64Image = Annotated[str, Strict(), Field(
    description="PNG/JPEG/TIFF/WebP file as base64; a data:image/...;base64, prefix is allowed",
    examples=["iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAJUlEQVR42mPc3+rHAAPhDGvgbCYGHIB0CRYvHhU458fP07SwAwAVYgXdW6kxywAAAABJRU5ErkJggg=="])]
ModelVariant = Annotated[Literal[VARIANTS], Field(  # type: ignore[valid-type]
    description="Which shipped weights: bicubic (trained for bicubic downsampling; the best on clean imagery, and the "
                "only one with an uncertainty map) or real (trained for sensor-like blur, noise and compression, and "
                "to stop at a 10 m sensor's sharpness; see the model card)", examples=[DEFAULT_VARIANT])]
ReturnMetadata = Annotated[bool, Strict(), Field(description="Include the metadata object in the answer")]
ReturnUncertainty = Annotated[bool, Strict(), Field(
    description="Also return the per-pixel uncertainty map: sigma of the output's BT.601 luma, in 0..1 intensity "
                "units, as float32 (on /infer the field uncertainty; on /upscale and /jobs a last TIFF band "
                "described 'uncertainty', which needs a TIFF/GeoTIFF output)", examples=[False])]
UncertaintySamples = Annotated[whole_number(UNCERTAINTY_SAMPLES.start, UNCERTAINTY_SAMPLES.stop - 1), Field(
    description=f"Seeded diffusion samples behind the uncertainty map when ddim_steps > 0, "
                f"{UNCERTAINTY_SAMPLES.start}-{UNCERTAINTY_SAMPLES.stop - 1} (the cost grows with it); "
                "unused with ddim_steps = 0", examples=[DEFAULT_UNCERTAINTY_SAMPLES])]
Consistency = Annotated[bool, Strict(), Field(
    description="Project the output onto the input: each s x s block of the output averages to the input pixel "
                "it came from, per band and in the data's units, so added detail never shifts the radiometry "
                "(false: the network's output as it is, the protocol's PSNR tables)", examples=[DEFAULT_CONSISTENCY])]


class UpscaleFields(BaseModel):
    """The fields of ``/infer``, ``/upscale`` and ``/jobs`` that make a request's :class:`UpscaleOptions`: their
    names and types on the wire (the APIs' signatures in ``service.py`` name the same, as BentoML needs)."""

    model_config = ConfigDict(extra="forbid")
    scale_factor: ScaleFactor = 4
    ddim_steps: DdimSteps = 0
    seed: Seed = None
    bands: Bands = None
    model: ModelVariant = DEFAULT_VARIANT
    return_uncertainty: ReturnUncertainty = False
    uncertainty_samples: UncertaintySamples = DEFAULT_UNCERTAINTY_SAMPLES
    consistency: Consistency = DEFAULT_CONSISTENCY

    @classmethod
    def pick(cls, values: dict[str, Any]) -> UpscaleFields:
        """These fields from an API's arguments, which BentoML has already checked one by one."""
        return cls.model_construct(**{name: values[name] for name in cls.model_fields if name in values})

    def options(self) -> UpscaleOptions:
        """The options these fields ask for; bands that do not parse are the client's 422."""
        try:
            return UpscaleOptions(self.scale_factor, self.ddim_steps, self.seed, parse_bands(self.bands), self.model,
                                  self.return_uncertainty, self.uncertainty_samples, self.consistency)
        except ValueError as exc:
            raise ServiceError(422, "invalid_request", str(exc)) from None


class JobParams(UpscaleFields):
    """The form fields of ``POST /jobs`` besides ``image`` (those of ``/upscale``; jobs write GeoTIFFs only)."""

    output_format: Annotated[Literal["tiff"], Field(description="Jobs write Cloud-Optimized GeoTIFFs")] = "tiff"


def form_value(text: str) -> Any:
    """A multipart text field as ``/upscale`` reads it (BentoML's rule, documented as the parts' JSON
    encoding): JSON when it parses (``4``, ``null``, ``"png"``), else the text itself (``4,3,2``, ``png``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class _Service(Protocol):
    apis: dict[str, Any]


Service = TypeVar("Service", bound=_Service)


def strict_apis(service: Service) -> Service:
    """Make every API of a BentoML service refuse fields its signature does not name (a class decorator).

    BentoML builds each API's input model from the method's signature, and pydantic ignores unknown
    fields by default; refusing them is what tells a client that ``scale=4`` (for ``scale_factor``) or a
    feature it expects does not exist.
    """
    for api in service.apis.values():
        api.input_spec.model_config["extra"] = "forbid"
        api.input_spec.model_rebuild(force=True)
    return service


class InferMetadata(BaseModel):
    input_size: tuple[int, int] = Field(description="(width, height) of the input")
    output_size: tuple[int, int] = Field(description="(width, height) of the output")
    scale_factor: int
    ddim_steps: int
    seed: int | None = Field(description="Seed actually used (null when ddim_steps = 0)")
    latency_ms: float
    device: str
    model: str
    model_variant: str = Field(description="The request's model field: which shipped weights answered")
    model_version: str
    consistency: bool = Field(description="Whether the output was projected onto the input (the consistency field)")
    tiles: int
    request_id: str


class InferResponse(BaseModel):
    # BentoML's response models reserve the attribute ``media_type`` (the HTTP body's type), so the
    # field is stored as ``file_media_type`` and travels under its public name.
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)
    image: str = Field(description="Upscaled file, base64 (PNG by default; GeoTIFF for a TIFF input)")
    file_media_type: str = Field(alias="media_type",
                                 description="Media type of the file in image, e.g. image/png or image/tiff")
    width: int
    height: int
    scale_factor: int
    metadata: InferMetadata | None = None
    uncertainty: str | None = Field(None, description=(
        "Only with return_uncertainty: the uncertainty map, base64 of a one-band float32 TIFF of the output's size "
        "(georeferenced like the output for a GeoTIFF input): sigma of the output's BT.601 luma in 0..1 "
        "intensity units, nodata where the output is"), exclude_if=lambda value: value is None)


class ErrorResponse(BaseModel):
    """Every error the service answers, from any layer."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="Machine-readable code, e.g. invalid_image, rate_limited")
    detail: str = Field(description="What went wrong, in words")
    request_id: str | None = Field(None, description="The request's id (inference routes), as in the log")


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["healthy", "unhealthy"]
    model_loaded: bool
    device: str
    uptime_seconds: float
    active_requests: int
    reason: str | None = Field(None, description="Why the service is unhealthy")


class Readiness(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["ready", "not_ready"]
    reason: str | None = Field(None, description="Why the service is not ready (loading, draining, failed)")


class VariantVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_version: str
    weights_sha256: str


class Version(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_version: str
    model: str
    model_version: str | None = Field(description="The default variant's (null until the model is ready)")
    weights_sha256: str | None = Field(description="The default variant's (null until the model is ready)")
    default_variant: str = Field(description="The variant a request without the model field gets")
    variants: dict[str, VariantVersion] = Field(description="Every variant this server loaded, by the name the "
                                                            "model field takes (empty until the model is ready)")
    python: str
    torch: str
    bentoml: str
    device: str
    engine: str | None = Field(description="What runs the neural operator (INFERENCE_ENGINE; auto resolved: "
                               "onnxruntime or torch); null until the model is ready")
    speed: dict[str, float] = Field(description="Seconds per million LR pixels of neural operator, by scale (x2..x8), "
                                    "as this server measures them (from its warm-up, then every synchronous "
                                    "request); a request that would take longer than REQUEST_TIMEOUT_S is refused "
                                    "at once (413 too_slow_for_sync)")


class JobAccepted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str
    status: Literal["queued"]
    status_url: str
    result_url: str


class JobProgress(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tiles_done: int
    tiles_total: int
    fraction: float


class RasterInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int
    height: int
    bands: int
    dtype: str
    crs: str | None


class JobOutput(RasterInfo):
    scale_factor: int
    ddim_steps: int
    seed: int | None
    source_bands: list[int]
    model_variant: str | None = Field(None, description="The job's model field (null for jobs queued before it "
                                                        "existed)")
    uncertainty_band: int | None = Field(None, description="Only with return_uncertainty: the 1-based band holding "
                                                           "the uncertainty map (the last)")
    consistency: bool | None = Field(None, description="The job's consistency field: whether the output is projected "
                                                       "onto the input (null for jobs queued before it existed)")


class JobError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: str
    detail: str


class Job(BaseModel):
    """A scene job as ``GET /jobs/{job_id}`` describes it."""

    model_config = ConfigDict(extra="forbid")
    job_id: str
    status: JobStatus
    progress: JobProgress
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None
    input: RasterInfo
    output: JobOutput
    expired: bool = Field(description="The job and its result are deleted (true only in the answer to DELETE: "
                                      "the job answers 410 from then on)")
    runner: str | None = Field(description="The replica running the job, or that ran it last (REPLICA_ID)")
    attempts: int = Field(description="How many times the job was started (more than once: resumed after an "
                                      "interruption, from its last finished tile row)")
    status_url: str
    result_url: str
