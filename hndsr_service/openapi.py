"""The service's OpenAPI document (``/docs.json``, drawn at ``/``): what each route really accepts and answers.

BentoML generates entries for the ``@bentoml.api`` methods only, lists 400/404/500 for them (bodies of its
own that the service never sends), and flattens nullable parameters into non-nullable ones. :func:`document`
rebuilds the paths: the APIs' request bodies from their signatures (strict, no unknown fields), every status
each route can answer with the error envelope, the probes, the metrics and the scene jobs; response bodies
are the models of ``schemas.py``. 401 and the API-key schemes appear only when ``API_KEYS`` is set, as the
server then behaves.

The document is OpenAPI 3.1: its schemas are pydantic's JSON Schema 2020-12 (``null`` types, ``prefixItems``).
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import attrs
from bentoml._internal.service.openapi.specification import OpenAPISpecification, PathItem
from pydantic import BaseModel, ConfigDict, create_model
from pydantic.json_schema import models_json_schema

from .schemas import ErrorResponse, Health, InferResponse, Job, JobAccepted, JobParams, Readiness, Version
from .settings import Settings, get_settings

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/tiff")
TEXT = {"text/plain": {"schema": {"type": "string"}}}

# What each status means, for every route that can answer it (the code is the body's ``error``).
STATUS_TEXT = {
    400: "A request the HTTP server cannot parse: a Content-Length that is not a number, a broken request line or "
         "header (malformed_request)",
    401: "API_KEYS is set and the request carries no valid key (unauthorized)",
    404: "No such job (job_not_found)",
    406: "The Accept header rules out every format the service writes (not_acceptable)",
    408: "The request body stalled: too little of it arrived in time (body_timeout)",
    409: "The job has not succeeded, so it has no result (job_not_finished, job_has_no_result)",
    410: "The job was deleted, by a DELETE or JOB_RETENTION_H after it finished (job_deleted)",
    413: "Body over MAX_PAYLOAD_MB (payload_too_large), image over MAX_IMAGE_PIXELS or MAX_BANDS "
         "(image_too_large), output over MAX_OUTPUT_PIXELS (output_too_large), work this server's measured speed "
         "puts past REQUEST_TIMEOUT_S (too_slow_for_sync: send it to /jobs)",
    415: "The body is not multipart/form-data (unsupported_media_type)",
    422: "Not an image the service can read (invalid_image), or parameters it refuses: a wrong type, a value "
         "out of range, an unknown field, bands the input does not have, an uncertainty map that the output format "
         "cannot carry or the model cannot make (invalid_request)",
    429: "More than RATE_LIMIT_PER_HOUR requests from this client in the last hour (rate_limited)",
    500: "An unexpected failure, with the request id (internal_error)",
    503: "Backpressure: MAX_QUEUE_DEPTH requests in flight (overloaded) or shutting down (draining); the model is "
         "not loaded (model_unavailable) or the GPU ran out of memory (gpu_out_of_memory)",
    504: "The request's REQUEST_TIMEOUT_S deadline passed waiting for a slot (queue_timeout) or in the model "
         "(inference_timeout)",
    507: "The job's output would not fit on the disk (insufficient_storage)",
}
JOB_STATUS_TEXT = {
    413: "Upload over MAX_JOB_UPLOAD_MB (payload_too_large), raster over MAX_JOB_PIXELS or MAX_BANDS "
         "(image_too_large)",
    503: "MAX_QUEUED_JOBS jobs queued or running (jobs_queue_full), shutting down (draining), or the model is not "
         "loaded (model_unavailable)",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "required": True,
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
ERROR_CODE = {"X-Error-Code": {"description": "The body's error code", "required": True,
                               "schema": {"type": "string"}}}
REQUEST_ID = {"X-Request-ID": {"description": "The request's id (the client's own when it sent a short, "
                                              "printable one)", "required": True, "schema": {"type": "string"}}}
JOB_ID = {"name": "job_id", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
RANGE = {"name": "Range", "in": "header", "required": False, "description": "Bytes of the result, e.g. bytes=0-1023",
         "schema": {"type": "string"}}


def _json(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}},
            **({"headers": headers} if headers else {})}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _errors(statuses: tuple[int, ...], texts: dict[int, str] | None = None) -> dict[str, Any]:
    """The error envelope for each status, with the meaning of each."""
    answers = {}
    for status in statuses:
        headers = {**ERROR_CODE, **(RETRY_AFTER if status in (429, 503) else {})}
        answers[str(status)] = _json((texts or {}).get(status, STATUS_TEXT[status]), _ref(ErrorResponse), headers)
    return answers


def _job_not_found() -> dict[str, Any]:
    """404 on a job's paths: the envelope, but for a path with a line break, which BentoML's router does not
    pass on to the job routes and answers itself in plain text."""
    answer = _errors((404,))["404"]
    return {**answer, "content": {**answer["content"], **TEXT},
            "headers": {"X-Error-Code": {**ERROR_CODE["X-Error-Code"], "required": False}}}


def _form(schema: dict[str, Any]) -> dict[str, Any]:
    """A multipart body whose ``image`` is a file and whose other fields are read as JSON when they parse
    (``4``, ``null``), else as text (``4,3,2``, ``png``): ``schemas.form_value``."""
    properties = {"image": {"type": "string", "format": "binary", "description": "The image or raster file"},
                  **{k: v for k, v in schema["properties"].items() if k != "image"}}
    body = {**schema, "properties": properties, "required": ["image"], "additionalProperties": False}
    encoding = {"image": {"contentType": ", ".join(IMAGE_TYPES)},
                **{k: {"contentType": "application/json"} for k in properties if k != "image"}}
    return {"required": True, "content": {"multipart/form-data": {"schema": body, "encoding": encoding}}}


def api_paths(service: Any, settings: Settings) -> dict[str, PathItem]:
    """``/infer`` and ``/upscale``: their bodies and every answer."""
    auth = (401,) if settings.api_keys else ()
    infer, upscale = service.apis["infer"], service.apis["upscale"]
    common = (400, *auth, 408, 413, 422, 429, 500, 503, 504)
    result_headers = {**REQUEST_ID,
                      "X-HNDSR-Latency-Ms": {"description": "Inference time", "required": True,
                                             "schema": {"type": "string"}},
                      "X-HNDSR-Seed": {"description": "The diffusion seed used (None with ddim_steps 0)",
                                       "required": True, "schema": {"type": "string"}}}
    return {
        "/infer": PathItem(post={
            **_operation(service, infer),
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _input_schema(infer)}}},
            "responses": {"200": _json("The upscaled file (base64) and its metadata", _ref(InferResponse),
                                       REQUEST_ID), **_errors(common)}}),
        "/upscale": PathItem(post={
            **_operation(service, upscale),
            "parameters": [{"name": "Accept", "in": "header", "required": False, "schema": {"type": "string"},
                            "description": "Output format when output_format is not given, e.g. image/webp"}],
            "requestBody": _form(_input_schema(upscale)),
            "responses": {"200": {"description": "The upscaled file", "headers": result_headers, "content": {
                media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_TYPES}},
                **_errors(tuple(sorted((*common, 406, 415))))}}),
    }


def _input_schema(api: Any) -> dict[str, Any]:
    """The API's parameters as plain pydantic describes them, from the method's signature (BentoML's own
    input model repeats the constraints of a union's members, and they leak into its schema as ``ge``/``le``)."""
    hints = typing.get_type_hints(api.func, include_extras=True)
    fields = {name: (hints[name], ... if param.default is param.empty else param.default)
              for name, param in inspect.signature(api.func).parameters.items() if name not in ("self", api.ctx_param)}
    model = create_model(f"{api.name}_request", __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                         **fields)
    return model.model_json_schema(ref_template=REF)


def _operation(service: Any, api: Any) -> dict[str, Any]:
    return {"tags": ["Service APIs"], "operationId": f"{service.name}__{api.name}", "x-bentoml-name": api.name,
            "description": api.doc or ""}


def probe_paths() -> dict[str, PathItem]:
    tags = ["Probes and metrics"]
    plain = {"description": "OK", "content": TEXT}
    return {
        "/health": PathItem(get={"tags": tags, "summary": "Liveness: the process is up and the model loaded",
                                 "responses": {"200": _json("Healthy", _ref(Health)),
                                               "503": _json("Unhealthy (the reason says why)", _ref(Health))}}),
        "/ready": PathItem(get={"tags": tags, "summary": "Readiness: loaded, warmed and not draining",
                                "responses": {"200": _json("Ready", _ref(Readiness)),
                                              "503": _json("Not ready (the reason says why)", _ref(Readiness),
                                                           RETRY_AFTER)}}),
        "/version": PathItem(get={"tags": tags, "summary": "API, model, weights and library versions",
                                  "responses": {"200": _json("Versions", _ref(Version))}}),
        "/metrics": PathItem(get={"tags": tags, "summary": "Prometheus metrics (text exposition format)",
                                  "responses": {"200": {"description": "Metrics", "content": TEXT}}}),
        **{path: PathItem(get={"tags": tags, "summary": summary,
                               "responses": {"200": plain, "503": {"description": "No", "content": TEXT}}})
           for path, summary in (("/livez", "BentoML's liveness probe (same state as /health)"),
                                 ("/healthz", "BentoML's liveness probe (same state as /health)"),
                                 ("/readyz", "BentoML's readiness probe (same state as /ready)"))},
    }


def job_paths(settings: Settings) -> dict[str, PathItem]:
    tags = ["Scene jobs"]
    auth = (401,) if settings.api_keys else ()
    job = _ref(Job)
    submit_form = JobParams.model_json_schema(ref_template=REF)
    submit_form["properties"]["seed"]["description"] = "Fixed at submission when omitted and ddim_steps > 0"
    return {
        "/jobs": PathItem(post={
            "tags": tags, "summary": "Submit a raster as a scene job",
            "description": "For rasters beyond the synchronous limits. The product is a Cloud-Optimized GeoTIFF "
                           "with the input's CRS, bounds, dtype, bands and nodata.",
            "requestBody": _form({**submit_form, "title": "JobSubmission"}),
            "responses": {"202": _json("Queued", _ref(JobAccepted), {
                "Location": {"description": "The job's status URL", "required": True,
                             "schema": {"type": "string"}}}),
                **_errors((400, *auth, 408, 413, 415, 422, 429, 503, 507), JOB_STATUS_TEXT)}}),
        "/jobs/{job_id}": PathItem(
            get={"tags": tags, "summary": "A job's status and progress", "parameters": [JOB_ID],
                 "responses": {"200": _json("The job", job), "404": _job_not_found(), **_errors((410,))}},
            delete={"tags": tags, "summary": "Delete a job: cancel it if it has not finished, delete its files",
                    "description": "From then on the job answers 410.", "parameters": [JOB_ID],
                    "responses": {"200": _json("Deleted (a queued job cancelled, or a finished one's result "
                                               "removed): its last record", job),
                                  "202": _json("Running: it stops at its next tile, and its files go then", job),
                                  "404": _job_not_found(), **_errors((400, *auth, 408, 410, 413))}}),
        "/jobs/{job_id}/result": PathItem(get={
            "tags": tags, "summary": "Download the result (HTTP Range supported, for GDAL's /vsicurl/)",
            "parameters": [JOB_ID, RANGE],
            "responses": {"200": {"description": "The COG", "content": {"image/tiff": {"schema": {
                "type": "string", "format": "binary"}}}},
                "206": {"description": "The requested byte range(s)", "content": {
                    "image/tiff": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/byteranges": {"schema": {"type": "string", "format": "binary"}}}},
                "400": {"description": "A malformed Range header", "content": TEXT},
                "404": _job_not_found(), **_errors((409, 410)),
                "416": {"description": "The Range lies beyond the file", "content": TEXT}}}),
    }


def components(settings: Settings) -> dict[str, Any]:
    """The response models (and the models they hold), and the key schemes when ``API_KEYS`` is set."""
    _, schemas = models_json_schema([(model, "serialization") for model in (
        ErrorResponse, InferResponse, Health, Readiness, Version, Job, JobAccepted)], ref_template=REF)
    security = {"bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}} if settings.api_keys else {}
    return {"schemas": schemas["$defs"], **({"securitySchemes": security} if security else {})}


def _secure(paths: dict[str, PathItem], settings: Settings) -> None:
    """With ``API_KEYS``, every POST and DELETE needs one of the two schemes; GETs stay open."""
    if not settings.api_keys:
        return
    for item in paths.values():
        for method in ("post", "delete"):
            operation = getattr(item, method)
            if operation is not None:
                operation["security"] = [{"bearer": []}, {"apiKey": []}]


def document(service: Any) -> None:
    """Make ``service`` (a BentoML Service) serve the document above as its ``/docs.json``."""
    base = type(service)
    settings = get_settings()

    class DocumentedService(base):  # type: ignore[misc, valid-type]
        __slots__ = ()

        @property
        def openapi_spec(self) -> OpenAPISpecification:
            paths = {**api_paths(self, settings), **job_paths(settings), **probe_paths()}
            _secure(paths, settings)
            return attrs.evolve(super().openapi_spec, openapi=OPENAPI_VERSION, paths=paths,
                                components=components(settings))

    service.__class__ = DocumentedService
