"""The scene-job worker: one per replica, on the server's event loop.

It claims the oldest queued job (or one whose lease ran out) from the shared store and writes its product
by tile rows through :class:`hndsr_raster.SceneUpscaler`, holding one of the service's inference slots per
row only, so synchronous requests keep being answered in between. After each row it checks its lease,
stores the row's checkpoint and records it: a replica that takes the job over replays the stored rows and
goes on from there, with the same pixels. It stops at the next tile when the job is cancelled (on any
replica), when its lease is lost (the job runs elsewhere now: it writes nothing more) or at shutdown (the
job goes back to the queue, its checkpoints kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rasterio.io import DatasetReader

from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import InferenceCancelled
from hndsr_raster import SceneUpscaler, open_raster
from hndsr_raster.radiometry import BandStats
from hndsr_raster.scene import working_path

from .. import metrics
from ..errors import ServiceError
from ..imaging import image_errors
from ..inference import InferenceRunner
from ..products import check_uncertainty, variant_pipeline
from ..schemas import JobParams
from ..state import ServiceState
from ..threads import run_in_thread
from .files import RESULT_NAME, JobFiles, StorageUnavailable
from .model import Job, JobStatus
from .store import JobStore, StoreUnavailable

logger = logging.getLogger("bentoml.hndsr.jobs")
HOUSEKEEPING_S = 10.0
GAUGES_S = 2.0
STORE_PATIENCE_S = 60.0  # how long a running job waits for the database to come back before leaving the job
PURGE_RETRY_S = 60.0  # an expired job's files not deleted by then (storage down, replica gone) are tried again
STALE_UPLOAD_S = 3600.0  # a submission's scratch unchanged this long belongs to no live upload
MAX_ATTEMPTS = 5  # a job whose runs keep dying (it kills its replica, say) fails instead of going round forever
T = TypeVar("T")


@dataclass
class _Run:
    """A job running here: what stops it, and why."""

    job: Job
    cancel: threading.Event = field(default_factory=threading.Event)
    lease_lost: bool = False

    def apply(self, flag: bool | None) -> None:
        """Act on what :meth:`JobStore.renew` or :meth:`JobStore.checkpoint` said."""
        if flag is None:
            self.lease_lost = True
        if flag is None or flag:
            self.cancel.set()


class JobWorker:
    def __init__(self, state: ServiceState, runner: InferenceRunner, store: JobStore, files: JobFiles) -> None:
        self.state = state
        self.runner = runner
        self.store = store
        self.files = files
        self.wakeup = asyncio.Event()
        self.runs: dict[str, _Run] = {}  # jobs running in this process
        self.stopping = False
        self.uploading = 0  # submissions admitted whose upload is still streaming (they hold a queue place)
        self._gauges: dict[str, tuple[str, float]] = {}

    @property
    def lease_s(self) -> float:
        return self.state.settings.job_lease_s

    def upscaler(self, src: DatasetReader, params: dict[str, Any]) -> SceneUpscaler:
        """The same product a job's parameters describe, at submit time and when it runs."""
        settings = self.state.settings
        options = record_options(params)
        pipeline = variant_pipeline(self.state.pipelines, options.model)
        check_uncertainty(pipeline, options)
        stats = params.get("band_stats")  # fixed at the first run
        return SceneUpscaler(pipeline, src, options,
                             band_stats={int(b): BandStats(*v) for b, v in stats.items()} if stats else None,
                             max_pixels=settings.max_job_pixels, max_bands=settings.max_bands)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel the job wherever it runs: at once if it is queued, at its runner's next tile row otherwise."""
        job = self.store.request_cancel(job_id)
        run = self.runs.get(job_id)  # read from a request's thread: the run may be ending meanwhile
        if job is not None and run is not None:
            run.cancel.set()
        return job

    def gauges(self) -> dict[str, tuple[str, float]]:
        """The fleet's job counts (the same on every replica), as last read by the worker's loop."""
        return dict(self._gauges)

    def interrupt(self) -> None:
        """On shutdown: stop running jobs at their next tile and put them back in the queue."""
        self.stopping = True
        for run in self.runs.values():
            run.cancel.set()

    async def run_forever(self) -> None:
        next_housekeeping = next_gauges = 0.0
        while True:
            ran = False
            if time.monotonic() >= next_gauges:
                next_gauges = time.monotonic() + GAUGES_S
                with _logged():
                    await run_in_thread(self._read_gauges)
            if time.monotonic() >= next_housekeeping:  # a sweep that fails (storage down) waits for the next one
                next_housekeeping = time.monotonic() + HOUSEKEEPING_S
                with _logged():
                    await run_in_thread(self.housekeeping)
            with _logged():
                ran = await self._claim_and_run()
            if ran:
                continue
            self.wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout=1.0)

    async def _claim_and_run(self) -> bool:
        """Claim the next job and run it here; False when there was none to run."""
        if not self.state.ready or self.stopping:
            return False
        job = await run_in_thread(self.store.claim, self.state.settings.replica_id, self.lease_s)
        if job is not None and self.stopping:  # the shutdown began while the claim was on its way
            await run_in_thread(self.store.release, job)
            return False
        if job is None:
            return False
        await self.run_job(job)
        return True

    def housekeeping(self) -> None:
        """Expire the jobs past retention and delete the files of expired jobs (each to one replica at a time,
        again after PURGE_RETRY_S if that failed), and the scratch folders on this machine that no run uses any
        more (those of a replica that was killed)."""
        self.store.expire(self.state.settings.job_retention_h * 3600)
        for job_id in self.store.claim_purges(PURGE_RETRY_S):
            self.files.delete(job_id)
            self.store.mark_purged(job_id)
        for job_id, attempt in list(self.files.scratch_folders()):
            if attempt == 0:  # a submission's: left behind only by a process killed while it took the upload
                if self.files.scratch_idle_s(job_id, 0) > STALE_UPLOAD_S:
                    self.files.drop_scratch(job_id, 0)
                continue
            job = self.store.get(job_id)
            if job is None or job.status is not JobStatus.RUNNING or job.attempts != attempt:
                self.files.drop_scratch(job_id, attempt)

    def _read_gauges(self) -> None:
        self._gauges = {
            "hndsr_jobs_queued": ("Scene jobs waiting to run, in the whole fleet",
                                  float(self.store.count(JobStatus.QUEUED))),
            "hndsr_jobs_running": ("Scene jobs running, in the whole fleet", float(self.store.count(JobStatus.RUNNING))),
        }

    async def run_job(self, job: Job) -> None:
        run = self.runs[job.id] = _Run(job)
        started = time.perf_counter()
        logger.info("job %s claimed (attempt %d, from tile row %d)", job.id, job.attempts, job.rows_done)
        lease = asyncio.ensure_future(self._keep_lease(run))
        try:
            status, error = await self._outcome(run)
        finally:
            lease.cancel()
            self.runs.pop(job.id, None)
            await run_in_thread(self.files.drop_scratch, job.id, job.attempts)
        if status is None:
            return
        # Recorded first, files second: a runner that lost its lease meanwhile must not touch the files that
        # the job's new runner works with.
        if not await self._patiently(lambda: self.store.finish(job, status, error)):
            logger.warning("job %s: its lease was lost before it could be recorded %s", job.id, status.value)
            return
        if status is JobStatus.SUCCEEDED:
            await run_in_thread(self.files.drop_checkpoints, job.id)
        if status is not JobStatus.SUCCEEDED:  # no result (an expired one's record is then purged by a sweep)
            await run_in_thread(self.files.delete, job.id)
        elif getattr(await self._patiently(lambda: self.store.get(job.id)), "expired", False):
            await run_in_thread(self.files.delete, job.id)  # deleted by its client while it ran
            await run_in_thread(self.store.mark_purged, job.id)
        metrics.JOB_SECONDS.labels(status=status.value).observe(time.perf_counter() - started)
        if error:
            metrics.JOB_FAILURES.labels(reason=metrics.job_failure_reason(error["error"])).inc()
        logger.info("job %s %s in %.1f s", job.id, status.value, time.perf_counter() - started)

    async def _outcome(self, run: _Run) -> tuple[JobStatus | None, dict[str, str] | None]:
        """Run the job; its final status and error, or None when it is not this replica's to record (shutdown,
        a lost lease, an unreachable database: the job resumes from its checkpoints wherever it is claimed)."""
        job = run.job
        try:
            if job.cancel_requested:  # deleted while its previous runner was gone
                raise InferenceCancelled("cancelled")
            if job.attempts > MAX_ATTEMPTS:
                return JobStatus.FAILED, {"error": "too_many_attempts", "detail": f"the job was started {MAX_ATTEMPTS} "
                                          "times and its replica stopped every time; it is not started again"}
            await self._process(run)
            return JobStatus.SUCCEEDED, None
        except InferenceCancelled:
            if run.lease_lost:
                logger.warning("job %s: lease lost (another replica took it over); stopped writing", job.id)
                return None, None
            if self.stopping:
                await self._patiently(lambda: self.store.release(job))
                logger.info("job %s interrupted by shutdown; queued again, to resume from its checkpoints", job.id)
                return None, None
            return JobStatus.CANCELLED, None
        except StoreUnavailable as exc:
            logger.warning("job %s left to another attempt: %s", job.id, exc)
            return None, None
        except StorageUnavailable as exc:
            return JobStatus.FAILED, {"error": "storage_unavailable", "detail": str(exc)}
        except ServiceError as exc:
            logger.warning("job %s failed: %s (%s)", job.id, exc.detail, _causes(exc))
            return JobStatus.FAILED, {"error": exc.code, "detail": exc.detail}
        except OSError as exc:
            code = "disk_full" if exc.errno == errno.ENOSPC else "io_error"
            return JobStatus.FAILED, {"error": code, "detail": f"writing the result failed: {exc.strerror or exc}"}
        except Exception:
            logger.exception("job %s failed", job.id)
            return JobStatus.FAILED, {"error": "internal_error", "detail": f"the job failed (job id {job.id})"}

    async def _fix_params(self, run: _Run, upscaler: SceneUpscaler, made_by: dict[str, Any]) -> None:
        """Keep in the record what every run of the job shares, as the seed is: the scene's statistics (one pass
        over it; a run resumed elsewhere normalises every row as the first run did) and what makes its checkpoints
        (the model and the tiling)."""
        params = {**run.job.params, "made_by": made_by}
        if "band_stats" not in params:
            stats = await run_in_thread(upscaler.band_stats)
            params["band_stats"] = {str(b): [s.low, s.high, s.fill] for b, s in stats.items()}
        if not await self._patiently(lambda: self.store.fix_params(run.job, params)):
            run.apply(None)

    async def _keep_lease(self, run: _Run) -> None:
        """Renew the lease a few times per ``JOB_LEASE_S``; learn of a cancel or of the lease's loss meanwhile."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                run.apply(await run_in_thread(self.store.renew, run.job))
            except Exception as exc:  # StoreUnavailable, a locked SQLite file: the next renewal may get through
                logger.warning("job %s: lease not renewed: %s", run.job.id, exc)

    async def _patiently(self, call: Callable[[], T]) -> T:
        """``call()`` in a thread, retried while the database is unreachable, for at most STORE_PATIENCE_S."""
        deadline = time.monotonic() + STORE_PATIENCE_S
        while True:
            try:
                return await run_in_thread(call)
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)

    async def _process(self, run: _Run) -> None:
        job, files = run.job, self.files
        scratch = files.scratch(job.id, job.attempts)
        scratch.mkdir(parents=True, exist_ok=True)
        result = scratch / RESULT_NAME
        part = working_path(result)
        source = await run_in_thread(files.input, job.id, job.attempts)
        with image_errors(), open_raster(source) as src:
            upscaler = self.upscaler(src, job.params)
            resume = await self._resume_rows(run, upscaler)
            steps = upscaler.steps(part, should_cancel=run.cancel.is_set, record=True, resume_rows=resume,
                                   load_row=lambda row: files.get_row(job.id, row))
            try:
                reported = job.tiles_done if resume else 0
                while True:
                    async with self.runner.slot():
                        step = await run_in_thread(next, steps, None)
                    if step is None:
                        break
                    metrics.TILES.inc(max(step.tiles_done - reported, 0))
                    reported = step.tiles_done
                    # The lease first: a runner that lost it (paused past JOB_LEASE_S) must not write.
                    run.apply(await self._patiently(lambda: self.store.renew(job)))
                    if run.lease_lost:
                        break
                    await run_in_thread(files.put_row, job.id, step.rows_done - 1, step.writes)
                    run.apply(await self._patiently(
                        lambda step=step: self.store.checkpoint(job, step.rows_done, step.tiles_done)))
                if run.cancel.is_set():
                    raise InferenceCancelled("cancelled")
                await run_in_thread(upscaler.finish, part, result)
                run.apply(await self._patiently(lambda: self.store.renew(job)))
                if run.cancel.is_set():
                    raise InferenceCancelled("cancelled")
                await run_in_thread(files.store_result, job.id, result)
            finally:
                await run_in_thread(steps.close)  # closing flushes the working file: not on the event loop
                part.unlink(missing_ok=True)

    async def _resume_rows(self, run: _Run, upscaler: SceneUpscaler) -> int:
        """The tile rows this run replays from the checkpoints: those recorded, unless a different model or
        tiling made them (a rolling upgrade, another TILE_SIZE): then the job starts over."""
        job, pipeline = run.job, upscaler.pipeline
        made_by = {"model_version": pipeline.version, "tile_size": pipeline.tile_size,
                   "tile_overlap": pipeline.tile_overlap, "consistency": upscaler.options.consistency}
        if job.params.get("made_by") == made_by:
            return job.rows_done
        if job.rows_done:
            logger.warning("job %s: its checkpoints were made by %s, this replica runs %s; starting over", job.id,
                           job.params.get("made_by"), made_by)
        await self._fix_params(run, upscaler, made_by)
        return 0


def _causes(exc: BaseException) -> str:
    """What lies under an error given in the service's own words (GDAL's message, say), for the log only."""
    causes = []
    while (exc := exc.__cause__ or exc.__context__) is not None:  # type: ignore[assignment]
        causes.append(f"{type(exc).__name__}: {exc}")
    return "; ".join(causes) or "no underlying error"


@contextlib.contextmanager
def _logged() -> Iterator[None]:
    """A step of the worker's loop that fails is logged and tried again later: nothing ends the worker."""
    try:
        yield
    except (StoreUnavailable, StorageUnavailable) as exc:
        logger.warning("scene-job worker waiting: %s", exc)
    except Exception:  # a locked or full disk, say
        logger.exception("scene-job worker error")


def record_params(fields: JobParams, options: UpscaleOptions) -> dict[str, Any]:
    """What a job's record keeps of its request: the form's fields, with the seed every run of it uses (fixed at
    submit, so that a run taken over makes the same bytes) and the bands as a list."""
    return {**fields.model_dump(), "seed": options.seed, "bands": list(options.bands) if options.bands else None}


def record_options(params: dict[str, Any]) -> UpscaleOptions:
    """The options of a job's record; one queued before an option existed gets the option's default, but for the
    projection: such a job was queued, and may have rows made, without it."""
    fields = {"consistency": False} | {name: value for name, value in params.items() if name in JobParams.model_fields}
    if fields.get("bands"):
        fields["bands"] = ",".join(map(str, fields["bands"]))
    return JobParams.model_validate(fields).options()

