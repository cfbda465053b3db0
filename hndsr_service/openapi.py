"""The OpenAPI page for the routes BentoML does not generate: the scene jobs (a mounted Starlette app).

BentoML documents its ``@bentoml.api`` methods and mounted FastAPI apps only; :func:`document` makes the
service's ``/docs.json`` include these paths too, so ``/`` describes every route a client can call.
"""

from __future__ import annotations

from typing import Any

from bentoml._internal.service.openapi.specification import OpenAPISpecification, PathItem

ERROR = {"description": "Error", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error", "detail"],
    "properties": {"error": {"type": "string", "description": "machine-readable code"},
                   "detail": {"type": "string", "description": "what went wrong, in words"}}}}}}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
PROGRESS = {"type": "object", "properties": {"tiles_done": {"type": "integer"}, "tiles_total": {"type": "integer"},
                                             "fraction": {"type": "number"}}}
RASTER = {"type": "object", "properties": {"width": {"type": "integer"}, "height": {"type": "integer"},
                                           "bands": {"type": "integer"}, "dtype": {"type": "string"},
                                           "crs": {"type": "string", "nullable": True}}}
JOB = {"type": "object", "properties": {
    "job_id": {"type": "string"},
    "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
    "progress": PROGRESS, "created_at": {"type": "string", "format": "date-time"},
    "started_at": {"type": "string", "format": "date-time", "nullable": True},
    "finished_at": {"type": "string", "format": "date-time", "nullable": True},
    "error": {"type": "object", "nullable": True, "properties": ERROR["content"]["application/json"]["schema"][
        "properties"]},
    "input": RASTER, "output": RASTER, "expired": {"type": "boolean"},
    "status_url": {"type": "string"}, "result_url": {"type": "string"}}}
SUBMIT_FORM = {"type": "object", "required": ["image"], "additionalProperties": False, "properties": {
    "image": {"type": "string", "format": "binary", "description": "the raster: GeoTIFF/TIFF (any size up to "
              "MAX_JOB_PIXELS), or PNG/JPEG/WebP"},
    "scale_factor": {"type": "integer", "minimum": 2, "maximum": 8, "default": 4},
    "ddim_steps": {"type": "integer", "minimum": 0, "maximum": 50, "default": 0},
    "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "description": "fixed at submit when omitted"},
    "bands": {"type": "string", "pattern": "^[1-9][0-9]*(,[1-9][0-9]*)*$", "description": "1-based, e.g. 4,3,2"},
    "output_format": {"type": "string", "enum": ["tiff"], "default": "tiff"}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): ERROR for status in statuses}


def job_paths() -> dict[str, PathItem]:
    tags = ["Scene jobs"]
    return {
        "/jobs": PathItem(post={
            "tags": tags, "summary": "Submit a raster as a scene job",
            "description": "For rasters beyond the synchronous limits. The product is a Cloud-Optimized GeoTIFF "
                           "with the input's CRS, bounds, dtype, bands and nodata.",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": SUBMIT_FORM}}},
            "responses": {"202": _json("Queued", {"type": "object", "properties": {
                k: {"type": "string"} for k in ("job_id", "status", "status_url", "result_url")}}),
                **_errors(401, 413, 415, 422, 429, 503, 507)}}),
        "/jobs/{job_id}": PathItem(
            get={"tags": tags, "summary": "A job's status and progress", "parameters": [JOB_ID],
                 "responses": {"200": _json("The job", JOB), **_errors(404)}},
            delete={"tags": tags, "summary": "Cancel a job, or delete a finished job's result",
                    "parameters": [JOB_ID],
                    "responses": {"200": _json("Cancelled, or result deleted", JOB),
                                  "202": _json("Running: stops at its next tile", JOB), **_errors(401, 404)}}),
        "/jobs/{job_id}/result": PathItem(get={
            "tags": tags, "summary": "Download the result (HTTP Range supported, for GDAL's /vsicurl/)",
            "parameters": [JOB_ID],
            "responses": {"200": {"description": "The COG", "content": {"image/tiff": {"schema": {
                "type": "string", "format": "binary"}}}},
                "206": {"description": "The requested byte range"},
                **_errors(404, 409, 410)}}),
    }


def document(service: Any) -> None:
    """Make ``service`` (a BentoML Service) list the scene-job routes on its OpenAPI page."""
    base = type(service)

    class DocumentedService(base):  # type: ignore[misc, valid-type]
        __slots__ = ()

        @property
        def openapi_spec(self) -> OpenAPISpecification:
            spec = super().openapi_spec
            spec.paths.update(job_paths())
            return spec

    service.__class__ = DocumentedService
