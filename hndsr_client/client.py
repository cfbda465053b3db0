"""A small client for the scene-jobs API: submit a raster, wait for it (with a progress bar), download.

    with JobsClient("http://127.0.0.1:8000") as client:
        job_id = client.submit("scene.tif", scale=2)
        client.wait(job_id, progress=True)
        client.download(job_id, "scene_x2.tif")
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from hndsr_model.options import UpscaleOptions

FAILED = ("failed", "cancelled")


def form_fields(options: UpscaleOptions) -> dict[str, str]:
    """The options as the form fields of ``/upscale`` and ``/jobs`` (the server reads each one as JSON); those at
    their default are left out, so that a server older than an option still takes requests that do not use it."""
    default = UpscaleOptions()
    fields = {"scale_factor": options.scale,
              "ddim_steps": options.ddim_steps if options.ddim_steps != default.ddim_steps else None,
              "seed": options.seed, "bands": ",".join(map(str, options.bands)) if options.bands else None,
              "model": options.model if options.model != default.model else None,
              "return_uncertainty": json.dumps(True) if options.uncertainty else None,
              "uncertainty_samples": options.uncertainty_samples if options.uncertainty else None,
              "consistency": json.dumps(options.consistency) if options.consistency != default.consistency else None}
    return {name: str(value) for name, value in fields.items() if value is not None}


def progress_bar(label: str, total: int, done: int) -> tqdm:
    """Tiles done of the job's total, with a rate and time left averaged over about the last 20 polls (the server
    counts a tile row at a time)."""
    return tqdm(total=total, initial=done, desc=label, unit="tile", smoothing=0.05,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tiles [{elapsed}<{remaining}, "
                           "{rate_fmt}]")


class HNDSRError(RuntimeError):
    """The service answered with its error envelope (or the job ended without a result)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


class JobsClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 60.0) -> None:
        headers = {"x-api-key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def submit(self, path: str | Path, options: UpscaleOptions | None = None, **fields: Any) -> str:
        """Upload a raster (streamed from disk) as a job; returns its id. The job's parameters are ``options``, or
        :class:`UpscaleOptions` made of ``fields`` (``scale=2, bands=(4, 3, 2)``): with ``uncertainty`` the result
        carries the uncertainty map as its last band; ``model`` picks the shipped weights."""
        if options is not None and fields:
            raise TypeError("give the options, or their fields, not both")
        options = options or UpscaleOptions(**fields)
        with Path(path).open("rb") as raster:
            response = self.http.post("/jobs", data=form_fields(options),
                                      files={"image": (Path(path).name, raster, "image/tiff")})
        return self._json(response, 202)["job_id"]

    def status(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.get(f"/jobs/{job_id}"), 200)

    def wait(self, job_id: str, progress: bool = False, poll_s: float = 1.0, timeout_s: float | None = None
             ) -> dict[str, Any]:
        """Poll until the job finishes; returns its record, raises :class:`HNDSRError` if it failed or was cancelled.

        A service that cannot answer for a while (a 503 with ``Retry-After`` while its job database restarts, a
        replica going away under the load balancer) is polled again after the wait it asks for: the job goes
        on meanwhile."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        status = "unknown"
        with contextlib.ExitStack() as stack:
            bar: tqdm | None = None  # made at the first answer, so that it starts with the job's own figures
            while True:
                job, wait_s = self._poll(job_id, poll_s)
                if job is not None:
                    status, done, total = job["status"], job["progress"]["tiles_done"], job["progress"]["tiles_total"]
                    if progress and bar is None:
                        bar = stack.enter_context(progress_bar(f"job {job_id[:8]} {status}", total, done))
                    if bar is not None:
                        bar.set_description_str(f"job {job_id[:8]} {status}", refresh=False)
                        bar.update(done - bar.n)
                    if status == "succeeded":
                        return job
                    if status in FAILED:
                        error = job["error"] or {"error": status, "detail": f"the job was {status}"}
                        raise HNDSRError(200, error["error"], error["detail"])
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {status} after {timeout_s:g} s")
                time.sleep(wait_s)

    def _poll(self, job_id: str, poll_s: float) -> tuple[dict[str, Any] | None, float]:
        """The job's record and when to poll next; no record while the service cannot say (503, connection lost)."""
        try:
            response = self.http.get(f"/jobs/{job_id}")
        except httpx.TransportError:
            return None, poll_s
        if response.status_code == 503:
            retry_after = response.headers.get("retry-after", "")
            return None, float(retry_after) if retry_after.isdigit() else poll_s
        return self._json(response, 200), poll_s

    def download(self, job_id: str, dest: str | Path, delete_after: bool = False) -> Path:
        """Stream the result to ``dest`` (written beside it first, renamed when complete); ``delete_after``: then
        delete the job from the service (its result would stay there for ``JOB_RETENTION_H``)."""
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.part")
        try:
            with self.http.stream("GET", f"/jobs/{job_id}/result") as response:
                if response.status_code != 200:
                    response.read()
                    self._json(response, 200)
                with part.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
            part.replace(dest)
        finally:
            part.unlink(missing_ok=True)
        if delete_after:  # the result is safe here: failing to delete it there is the server's to expire later
            try:
                self.cancel(job_id)
            except (HNDSRError, httpx.HTTPError) as exc:
                warnings.warn(f"job {job_id} was downloaded but not deleted from the service ({exc}); it expires "
                              "there after the service's retention", stacklevel=2)
        return dest

    def cancel(self, job_id: str) -> dict[str, Any]:
        response = self.http.delete(f"/jobs/{job_id}")
        return self._json(response, response.status_code if response.status_code in (200, 202) else 200)

    @staticmethod
    def _json(response: httpx.Response, expected: int) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {"error": "http_error", "detail": response.text[:200]}
        if response.status_code != expected:
            raise HNDSRError(response.status_code, body.get("error", "http_error"), body.get("detail", ""))
        return body
