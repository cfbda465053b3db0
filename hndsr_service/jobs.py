"""Scene jobs: rasters beyond the synchronous limits, super-resolved in the background.

``POST /jobs`` streams the upload into ``JOBS_DIR/<id>/``, checks the raster's header and the free disk,
and queues a record (:mod:`.job_store`). One :class:`JobWorker` per process takes queued jobs in order
and writes each product by windows through :class:`hndsr_raster.SceneUpscaler`, holding one of the
service's inference slots per tile row only, so synchronous requests keep being answered in between.
A cancel stops a running job at its next tile; a process that dies leaves its job to be re-queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from rasterio.io import DatasetReader

from hndsr_model.pipeline import InferenceCancelled
from hndsr_model.weights import DEFAULT_VARIANT
from hndsr_raster import SceneOptions, SceneUpscaler, open_raster
from hndsr_raster.scene import working_path

from . import metrics
from .errors import ServiceError
from .imaging import image_errors
from .inference import InferenceRunner
from .job_store import Job, JobStore
from .products import check_uncertainty, variant_pipeline
from .schemas import map_samples
from .state import ServiceState
from .threads import run_in_thread

logger = logging.getLogger("bentoml.hndsr.jobs")
RESULT_NAME = "result.tif"
INPUT_NAME = "input"
HEARTBEAT_S = 5.0
HEARTBEAT_STALE_S = 30.0  # a running job whose process has not beaten for this long is re-queued
HOUSEKEEPING_S = 10.0


class JobWorker:
    def __init__(self, state: ServiceState, runner: InferenceRunner, store: JobStore) -> None:
        self.state = state
        self.runner = runner
        self.store = store
        self.wakeup = asyncio.Event()
        self.cancels: dict[str, threading.Event] = {}  # jobs running in this process
        self.stopping = False
        self.uploading = 0  # submissions admitted whose upload is still streaming (they hold a queue place)

    def upscaler(self, src: DatasetReader, params: dict[str, Any]) -> SceneUpscaler:
        """The same product a job's parameters describe, at submit time and when it runs."""
        settings = self.state.settings
        # .get: records queued before the model field existed ran the default variant
        pipeline = variant_pipeline(self.state.pipelines, params.get("model", DEFAULT_VARIANT))
        bands = tuple(params["bands"]) if params["bands"] else None
        # .get: records queued before the uncertainty map existed have no such parameters
        samples = map_samples(params.get("return_uncertainty", False), params.get("uncertainty_samples", 0))
        check_uncertainty(pipeline, samples)
        options = SceneOptions(params["scale_factor"], params["ddim_steps"], params["seed"], bands, samples)
        return SceneUpscaler(pipeline, src, options, settings.max_job_pixels, settings.max_bands)

    def cancel(self, job_id: str) -> Job | None:
        job = self.store.request_cancel(job_id)
        if job is not None and job.id in self.cancels:
            self.cancels[job.id].set()
        if job is not None and job.status == "cancelled":
            shutil.rmtree(self.store.job_dir(job.id), ignore_errors=True)
        return job

    def gauges(self) -> dict[str, tuple[str, float]]:
        return {"hndsr_jobs_queued": ("Scene jobs waiting to run", float(self.store.count("queued"))),
                "hndsr_jobs_running": ("Scene jobs running", float(self.store.count("running")))}

    def interrupt(self) -> None:
        """On shutdown: stop running jobs at their next tile and put them back in the queue."""
        self.stopping = True
        for event in self.cancels.values():
            event.set()

    async def run_forever(self) -> None:
        next_housekeeping = 0.0
        while True:
            try:
                if time.monotonic() >= next_housekeeping:
                    await run_in_thread(self.housekeeping)
                    next_housekeeping = time.monotonic() + HOUSEKEEPING_S
                job = self.store.claim_next() if self.state.ready and not self.stopping else None
                if job is not None:
                    await self.run_job(job)
                    continue
            except Exception:  # a locked or full disk must not end the worker: log, wait, try again
                logger.exception("scene-job worker error")
            self.wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout=1.0)

    def housekeeping(self) -> None:
        for job_id in self.store.requeue_stale(HEARTBEAT_STALE_S):
            logger.warning("job %s was interrupted (its process stopped); queued again", job_id)
            working_path(self.store.job_dir(job_id) / RESULT_NAME).unlink(missing_ok=True)
        for job_id in self.store.expire(self.state.settings.job_retention_h * 3600):
            shutil.rmtree(self.store.job_dir(job_id), ignore_errors=True)

    async def run_job(self, job: Job) -> None:
        cancel = self.cancels.setdefault(job.id, threading.Event())
        started = time.perf_counter()
        heartbeat = asyncio.ensure_future(self._heartbeat(job.id))
        try:
            await self._process(job, cancel)
            status, error = "succeeded", None
        except InferenceCancelled:
            if self.stopping:
                self.store.requeue(job.id)
                logger.info("job %s interrupted by shutdown; queued again", job.id)
                return
            status, error = "cancelled", None
        except ServiceError as exc:
            status, error = "failed", {"error": exc.code, "detail": exc.detail}
        except OSError as exc:
            code = "disk_full" if exc.errno == errno.ENOSPC else "io_error"
            status, error = "failed", {"error": code, "detail": f"writing the result failed: {exc.strerror or exc}"}
        except Exception:
            logger.exception("job %s failed", job.id)
            status, error = "failed", {"error": "internal_error", "detail": f"the job failed (job id {job.id})"}
        finally:
            heartbeat.cancel()
            self.cancels.pop(job.id, None)
        if status != "succeeded":
            (self.store.job_dir(job.id) / RESULT_NAME).unlink(missing_ok=True)
        if status == "cancelled":
            shutil.rmtree(self.store.job_dir(job.id), ignore_errors=True)
        self.store.finish(job.id, status, error)
        if self.store.get(job.id).expired:  # type: ignore[union-attr]  # deleted by its client while it ran
            shutil.rmtree(self.store.job_dir(job.id), ignore_errors=True)
        metrics.JOB_SECONDS.labels(status=status).observe(time.perf_counter() - started)
        if error:
            metrics.JOB_FAILURES.labels(reason=metrics.job_failure_reason(error["error"])).inc()
        logger.info("job %s %s in %.1f s", job.id, status, time.perf_counter() - started)

    async def _heartbeat(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self.store.beat(job_id)

    async def _process(self, job: Job, cancel: threading.Event) -> None:
        folder = self.store.job_dir(job.id)
        result = folder / RESULT_NAME
        part = working_path(result)
        with image_errors(), open_raster(folder / INPUT_NAME) as src:
            upscaler = self.upscaler(src, job.params)
            steps = upscaler.steps(part, should_cancel=cancel.is_set)
            try:
                reported = 0
                while True:
                    async with self.runner.slot():
                        done = await run_in_thread(next, steps, None)
                    if done is None:
                        break
                    metrics.TILES.inc(done - reported)
                    reported = done
                    if self.store.progress(job.id, done):
                        cancel.set()
                if cancel.is_set():
                    raise InferenceCancelled("cancelled")
                await run_in_thread(upscaler.finish, part, result)
            finally:
                steps.close()
                part.unlink(missing_ok=True)


def save_upload(upload: Any, target: Path) -> int:
    """Copy an uploaded file (already spooled by the form parser) into the job's folder; returns its size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, length=1 << 20)
        return out.tell()
