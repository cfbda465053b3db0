"""The scene jobs' HTTP routes: ``POST /jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/result``, ``DELETE /jobs/{id}``.

Cheap refusals come before the upload is read (draining, model not ready, queue full); the upload's size
is bounded while it streams by the payload guard (``MAX_JOB_UPLOAD_MB``); the raster header and the free
disk are checked before a job is queued. Any replica answers for any job: the records are in the shared
store, the files with their owner (:mod:`.files`). Every error is the service's JSON envelope; while the
job database or the object storage cannot be reached, a 503 with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hndsr_raster import open_raster

from ..errors import ServiceError, error_response
from ..imaging import image_errors
from ..schemas import JobParams, form_value
from ..threads import run_in_thread
from ..uploads import repeated_fields, repeated_message
from .files import StorageUnavailable, StoredResult
from .model import Job, JobStatus, is_job_id, new_job_id
from .store import StoreUnavailable
from .worker import JobWorker, record_params

JOB_FIELDS = ("image", *JobParams.model_fields)
QUEUE_RETRY_AFTER_S = 30
UNAVAILABLE_RETRY_AFTER_S = 5
UPLOAD_NAME = "upload"

Handler = Callable[[Request], Awaitable[Response]]


def enveloped(handler: Handler) -> Handler:
    """Answer the handler's refusals, and the form parser's, with the service's JSON envelope."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ServiceError as exc:
            return error_response(exc)
        except HTTPException as exc:  # Starlette's multipart parser on a malformed body
            return error_response(ServiceError(422, "invalid_request", f"malformed multipart body: {exc.detail}"))
        except ClientDisconnect:
            return error_response(ServiceError(499, "client_closed_request", "the upload stopped before its end"))
        except StoreUnavailable as exc:
            return error_response(ServiceError(503, "jobs_database_unavailable", f"{exc}; retry shortly",
                                               retry_after=UNAVAILABLE_RETRY_AFTER_S))
        except StorageUnavailable as exc:
            return error_response(ServiceError(503, "storage_unavailable", f"{exc}; retry shortly",
                                               retry_after=UNAVAILABLE_RETRY_AFTER_S))

    return wrapped


def job_routes(worker: JobWorker) -> list[Route]:
    store, files = worker.store, worker.files

    async def find(request: Request) -> Job:
        """The job the path names; a deleted one is gone (410), so that nothing answers for it any more."""
        job_id = request.path_params["job_id"]
        job = await run_in_thread(store.get, job_id) if is_job_id(job_id) else None
        if job is None:
            hint = "" if is_job_id(job_id) else "; job ids are 32 hex characters"
            raise ServiceError(404, "job_not_found", f"no job {job_id[:64]!r}{hint}")
        if job.expired:
            raise ServiceError(410, "job_deleted", f"job {job.id} was deleted, by a DELETE or "
                               f"{worker.state.settings.job_retention_h:g} h after it finished")
        return job

    async def submit(request: Request) -> Response:
        async with _reserve_place(worker):
            async with request.form(max_files=1, max_fields=len(JOB_FIELDS)) as form:
                repeated = repeated_fields(form)
                if repeated:
                    raise ServiceError(422, "invalid_request", repeated_message(repeated))
                params = _params({k: v for k, v in form.items() if k != "image"})
                upload = form.get("image")
                if not isinstance(upload, UploadFile):
                    raise ServiceError(422, "invalid_request", "the multipart field image (a raster file) is required")
                job = await run_in_thread(_create, worker, upload, params)
        worker.wakeup.set()
        body = {"job_id": job.id, "status": job.status.value, "status_url": f"/jobs/{job.id}",
                "result_url": f"/jobs/{job.id}/result"}
        return JSONResponse(body, status_code=202, headers={"location": body["status_url"]})

    async def status(request: Request) -> Response:
        return JSONResponse((await find(request)).to_json())

    async def result(request: Request) -> Response:
        job = await find(request)
        if not job.status.finished:
            raise ServiceError(409, "job_not_finished", f"job is {job.status.value}; the result exists once it succeeds")
        if job.status is not JobStatus.SUCCEEDED:
            raise ServiceError(409, "job_has_no_result", f"job {job.status.value}; it has no result")
        stored = await run_in_thread(files.result, job.id)
        if stored is None:  # deleted while this request was on its way
            raise ServiceError(410, "job_deleted", f"job {job.id} was deleted")
        filename = f"hndsr-{job.id}.tif"
        if stored.path is not None:
            return FileResponse(stored.path, media_type="image/tiff", filename=filename)
        return _ranged(request, stored, filename)

    async def delete(request: Request) -> Response:
        """Cancel the job if it has not finished, delete its files, and forget it: from now on it is 410.
        A running job stops at its next tile row wherever it runs (202); its runner removes its files then."""
        job = await find(request)
        if not job.status.finished:
            job = await run_in_thread(worker.cancel, job.id) or job
        running = job.status is JobStatus.RUNNING
        if not running:  # files first: if the storage fails (503), the job is still there to delete again
            await run_in_thread(files.delete, job.id)
        await run_in_thread(store.mark_expired, job.id, not running)
        job = await run_in_thread(store.get, job.id) or job
        if running and job.status.finished:  # it ended meanwhile, before its runner saw the job expired
            await run_in_thread(files.delete, job.id)
            await run_in_thread(store.mark_purged, job.id)
        return JSONResponse(job.to_json(), status_code=202 if running else 200)

    async def job(request: Request) -> Response:
        # One route per path, so that a 405 names every method the path has (Allow: DELETE, GET, HEAD).
        return await (delete(request) if request.method == "DELETE" else status(request))

    # ``path``: whatever follows /jobs/, slashes included, is a job id to look up (404 in the envelope).
    return [Route("/jobs", enveloped(submit), methods=["POST"]),
            Route("/jobs/{job_id:path}/result", enveloped(result), methods=["GET", "HEAD"]),
            Route("/jobs/{job_id:path}", enveloped(job), methods=["GET", "DELETE"])]


def _ranged(request: Request, stored: StoredResult, filename: str) -> Response:
    """A stored object streamed through this replica, whole or one byte range (``Range: bytes=A-B``, ``A-``,
    ``-N``), so that API keys still apply and ``curl`` and GDAL's ``/vsicurl/`` read it like a file. With its
    ``ETag``: a ``Range`` under an ``If-Range`` that names another version gets the whole file (RFC 9110)."""
    assert stored.read_range is not None  # a result that is not a local file is read by ranges
    size = stored.size
    headers = {"accept-ranges": "bytes", "content-disposition": f'attachment; filename="{filename}"'}
    if stored.etag:
        headers["etag"] = stored.etag
    if_range = request.headers.get("if-range")
    span = _byte_range(request.headers.get("range"), size) if if_range in (None, stored.etag) else None
    if span == "unsatisfiable":
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    start, end = span if span else (0, size - 1)
    headers["content-length"] = str(end - start + 1)
    if span:
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    status = 206 if span else 200
    if request.method == "HEAD" or size == 0:
        return Response(status_code=status, headers=headers, media_type="image/tiff")
    return StreamingResponse(stored.read_range(start, end), status_code=status, headers=headers,
                             media_type="image/tiff")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The one range a ``Range`` header asks for; None to send the whole file (no header, several ranges or one
    this server does not parse, which RFC 9110 lets it ignore), or ``"unsatisfiable"``."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes="):].strip().partition("-")
    try:
        if not first:
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    if start < 0 or start > end or start >= size:
        return "unsatisfiable"
    return start, end


@contextlib.asynccontextmanager
async def _reserve_place(worker: JobWorker) -> AsyncIterator[None]:
    """Admit a submission and hold its place in the queue while its upload streams in, so that overlapping
    uploads cannot together pass ``MAX_QUEUED_JOBS``; refusals come before the body is read."""
    settings = worker.state.settings
    refusal = worker.state.refusal()
    if refusal is not None:
        raise refusal
    counted = await run_in_thread(worker.store.count, JobStatus.QUEUED, JobStatus.RUNNING)
    waiting = counted + worker.uploading
    if waiting >= settings.max_queued_jobs:
        raise ServiceError(503, "jobs_queue_full", f"{waiting} jobs queued, running or uploading (limit "
                           f"{settings.max_queued_jobs}); retry later", retry_after=QUEUE_RETRY_AFTER_S)
    worker.uploading += 1
    try:
        yield
    finally:
        worker.uploading -= 1


def _params(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - set(JOB_FIELDS))
    if unknown:
        raise ServiceError(422, "invalid_request", f"unknown field{'s' if len(unknown) > 1 else ''}: "
                           f"{', '.join(unknown)}; accepted: {', '.join(JOB_FIELDS)}")
    values = {k: form_value(v) if isinstance(v, str) else v for k, v in fields.items()}
    if values.get("output_format") in ("png", "jpeg", "webp"):
        raise ServiceError(422, "invalid_request", "jobs produce a Cloud-Optimized GeoTIFF (output_format tiff); "
                           "use /upscale for png, jpeg or webp")
    try:
        fields = JobParams.model_validate(values)
    except ValidationError as exc:
        raise ServiceError(422, "invalid_request", "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    return record_params(fields, fields.options().seeded())


def _create(worker: JobWorker, upload: UploadFile, params: dict[str, Any]) -> Job:
    """Store the upload, check the raster and the disk, queue the job; on any refusal nothing stays behind."""
    job_id = new_job_id()
    scratch = worker.files.scratch(job_id, 0)
    try:
        source = _save_upload(upload, scratch / UPLOAD_NAME)
        with image_errors(), open_raster(source) as src:
            upscaler = worker.upscaler(src, params)
            needed, free = 2 * upscaler.output_bytes_estimate(), shutil.disk_usage(scratch).free
            if needed > free:
                raise ServiceError(507, "insufficient_storage", f"the result needs up to {needed / 2**30:.1f} GiB "
                                   f"of disk while it is written; {free / 2**30:.1f} GiB is free")
            output = {**upscaler.describe_output(), "model_variant": params["model"],
                      "consistency": params["consistency"]}
            described = upscaler.describe_input(), upscaler.tiles_total
        worker.files.store_input(job_id, source)
        return worker.store.create(job_id, params, described[0], output, described[1])
    except BaseException:
        worker.files.delete(job_id)
        raise
    finally:
        worker.files.drop_scratch(job_id, 0)


def _save_upload(upload: Any, target: Path) -> Path:
    """Copy an uploaded file (already spooled by the form parser) into the job's scratch."""
    target.parent.mkdir(parents=True, exist_ok=True)
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, length=1 << 20)
    return target
