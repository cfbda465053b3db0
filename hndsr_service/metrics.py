"""The one place every ``hndsr_*`` metric is defined.

Counters, histograms and ``hndsr_active_requests`` live in prometheus_client's multiprocess store
when BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` (one file per worker, summed at scrape time), so
``/metrics`` is right whichever worker answers it; :func:`setup_multiprocess_store` gives each server a
store of its own. Values that are facts of the moment (uptime, GPU memory, readiness, configured
limits) are read when the scrape happens.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Every path label the service reports; anything else is counted as "other" so that random paths
# cannot create new series.
KNOWN_ENDPOINTS = frozenset(
    {"/infer", "/upscale", "/jobs", "/health", "/ready", "/version", "/metrics", "/healthz", "/livez", "/readyz",
     "/docs.json", "/schema.json", "/"}
)
JOB_FAILURE_REASONS = ("invalid_input", "disk_full", "io_error", "internal_error")
JOB_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
PIXEL_BUCKETS = (16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216)

REQUESTS = Counter("hndsr_requests_total", "HTTP responses by endpoint and status code", ["endpoint", "status"])
ERRORS = Counter("hndsr_errors_total", "Error responses by error type", ["error_type"])
INFERENCE_SECONDS = Histogram("hndsr_inference_seconds", "Model inference time per request",
                              buckets=LATENCY_BUCKETS)
ACTIVE_REQUESTS = Gauge("hndsr_active_requests", "Inference requests admitted and not yet answered",
                        multiprocess_mode="livesum")
RATE_LIMITED = Counter("hndsr_rate_limited_total", "Requests rejected by the per-IP rate limit")
BACKPRESSURE_REJECTED = Counter("hndsr_backpressure_rejected_total", "Requests shed at the queue-depth limit")
INPUT_PIXELS = Histogram("hndsr_input_pixels", "Input image size in pixels", buckets=PIXEL_BUCKETS)
TILES = Counter("hndsr_tiles_total", "Tiles processed by the model")
JOB_SECONDS = Histogram("hndsr_job_seconds", "Scene job run time by final status", ["status"], buckets=JOB_BUCKETS)
JOB_FAILURES = Counter("hndsr_job_failures_total", "Scene jobs that failed, by reason", ["reason"])
for _reason in JOB_FAILURE_REASONS:  # every reason exists from the start, so rate() and alerts see zeros
    JOB_FAILURES.labels(reason=_reason)
SHARED_LIMITS_DEGRADED = Gauge("hndsr_shared_limits_degraded", "1 while Redis is unreachable and the rate limit "
                               "and queue depth fall back to per-replica limits", multiprocess_mode="livemax")
REDIS_ERRORS = Counter("hndsr_redis_errors_total", "Failed calls to the Redis that shares the limits")
CANCELLED = Counter("hndsr_inference_cancelled_total", "Inferences stopped before the end", ["reason"])


def endpoint_label(path: str) -> str:
    if path.startswith("/jobs/"):  # one label for every job id: ids must not become series
        return "/jobs/{id}/result" if path.endswith("/result") else "/jobs/{id}"
    return path if path in KNOWN_ENDPOINTS else "other"


def job_failure_reason(error_code: str) -> str:
    """A job's error code as one of the few failure reasons the metric knows."""
    if error_code in JOB_FAILURE_REASONS:
        return error_code
    return "invalid_input" if error_code.startswith(("invalid", "image_too_large")) else "internal_error"


def record_response(path: str, status: int, error_type: str | None = None) -> None:
    REQUESTS.labels(endpoint=endpoint_label(path), status=str(status)).inc()
    if error_type:
        ERRORS.labels(error_type=error_type).inc()


class LiveCollector(Collector):
    """Gauges computed at scrape time from a callable returning ``{name: (help, value)}``."""

    def __init__(self, read: Callable[[], dict[str, tuple[str, float]]]) -> None:
        self.read = read

    def collect(self):
        for name, (doc, value) in self.read().items():
            yield GaugeMetricFamily(name, doc, value=value)


def setup_multiprocess_store() -> Path | None:
    """Give this server a multiprocess store of its own; in its workers, forget dead workers' live gauges.

    BentoML's store is ``$BENTOML_HOME/prometheus_multiproc_dir`` for every server: each `bentoml serve`
    empties it as it starts, and each sums every file in it. A second server on the same home wiped the
    first one's counters (its worker went on writing to deleted files) and put its own in their place.
    Called as the service module is imported: in the `bentoml serve` process that is before BentoML picks
    the directory, and it gets ``$BENTOML_HOME/prometheus_multiproc/<host>-<pid>`` (removed at exit; the
    folders of this host's servers that are no longer running are removed now). Returns that folder.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.context import server_context

    if server_context.worker_index is not None:  # a worker: BentoML gave it the store in PROMETHEUS_MULTIPROC_DIR
        _forget_dead_processes()
        return None
    parent = Path(BentoMLContainer.bentoml_home.get()) / "prometheus_multiproc"
    host = socket.gethostname()
    for folder in parent.glob(f"{host}-*"):
        pid = folder.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    own = parent / f"{host}-{os.getpid()}"
    BentoMLContainer.prometheus_multiproc_dir.set(str(own))
    atexit.register(shutil.rmtree, own, True)
    return own


def _forget_dead_processes() -> None:
    """Drop the live gauges (``hndsr_active_requests``, ...) of processes that died without saying so.

    BentoML marks a worker dead only when it exits cleanly; one killed (SIGKILL, the OOM killer) kept its
    last values in the sums for good, e.g. ``hndsr_active_requests`` at 1 for the request it died in.
    Counters and histograms stay: what was counted happened.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        if pid.isdigit() and not _running(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _shared_registry() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render(live: Callable[[], dict[str, tuple[str, float]]]) -> bytes:
    """Prometheus text for all ``hndsr_*`` metrics: the shared store plus this process's live gauges."""
    live_registry = CollectorRegistry()
    live_registry.register(LiveCollector(live))
    return generate_latest(_shared_registry()) + generate_latest(live_registry)
