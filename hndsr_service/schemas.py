"""Request parameter types and response models of the HTTP API (one declaration feeds validation,
the OpenAPI page and the Python client)."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator, Field

API_VERSION = "1.0"

ScaleFactor = Annotated[int, Ge(2), Le(8), Field(description="Integer upscaling factor, 2-8", examples=[4])]
DdimSteps = Annotated[int, Ge(0), Le(50), Field(
    description="Diffusion refinement steps; 0 = deterministic neural operator only", examples=[0])]
Seed = Annotated[int | None, Ge(0), Le(2**32 - 1), Field(
    description="Seed for the diffusion noise (same seed, same bytes); null = random", examples=[None])]
OutputFormat = Annotated[Literal["png", "jpeg", "webp", "tiff"] | None, Field(
    description="Output file format; null = the Accept header's (on /upscale), else GeoTIFF for a TIFF input "
                "and PNG otherwise", examples=[None])]
BandList = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,4}(,[1-9][0-9]{0,4})*$")]
# BentoML's form parser hands a lone number ("4") over as an int; it is the same band list.
Bands = Annotated[BandList | None, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v), Field(
    description="TIFF/GeoTIFF inputs: comma-separated 1-based bands to keep, in output order (e.g. 4,3,2); "
                "null = all bands", examples=[None])]
Base64Image = Annotated[str, Field(
    description="PNG/JPEG/TIFF/WebP file as base64; a data:image/...;base64, prefix is allowed",
    examples=["iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAJUlEQVR42mPc3+rHAAPhDGvgbCYGHIB0CRYvHhU458fP07SwAwAVYgXdW6kxywAAAABJRU5ErkJggg=="])]


class InferMetadata(BaseModel):
    input_size: tuple[int, int] = Field(description="(width, height) of the input")
    output_size: tuple[int, int] = Field(description="(width, height) of the output")
    scale_factor: int
    ddim_steps: int
    seed: int | None = Field(description="Seed actually used (null when ddim_steps = 0)")
    latency_ms: float
    device: str
    model: str
    model_version: str
    tiles: int
    request_id: str


class InferResponse(BaseModel):
    image: str = Field(description="Upscaled file, base64 (PNG by default; GeoTIFF for a TIFF input)")
    media_type: str = Field(description="Media type of the file in image, e.g. image/png or image/tiff")
    width: int
    height: int
    scale_factor: int
    metadata: InferMetadata | None = None
