"""Every limit and switch of the service, read once from the environment and validated.

A bad value stops start-up with one line naming the variable, its value and what is allowed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from hndsr_model.options import DEFAULT_TILE_SIZE, ENGINES

T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot run with."""


@dataclass(frozen=True)
class ApiKey:
    """One client's key and, optionally, its own hourly limit (else ``RATE_LIMIT_PER_HOUR``)."""

    secret: str = field(repr=False)
    rate_limit_per_hour: int | None = None

    @property
    def fingerprint(self) -> str:
        """Names the key where it must be told apart (the rate limiter's records) without revealing it."""
        return hashlib.sha256(self.secret.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    # What runs the neural operator (hndsr_model.engines): auto takes ONNX Runtime on the CPU, PyTorch on a GPU.
    inference_engine: str = "auto"
    max_queue_depth: int = 20
    rate_limit_per_hour: int = 100
    max_payload_mb: float = 20.0
    max_image_pixels: int = 16_000_000
    max_output_pixels: int = 67_108_864
    max_concurrent: int = 4
    request_timeout_s: float = 30.0
    # Refuse at once (413) synchronous work that the measured speed puts past request_timeout_s; false: start it,
    # and stop it at the deadline (504).
    admit_by_speed: bool = True
    # A request body that stalls this long answers 408 (slow clients must not hold their place forever).
    body_idle_timeout_s: float = 10.0
    drain_timeout_s: float = 30.0
    tile_size: int = DEFAULT_TILE_SIZE
    tile_overlap: int = 16
    # Tiles per network call and the micro-batcher's wait; None: the model's default for the device
    # (hndsr_model.pipeline.DEFAULT_TILE_BATCH, DEFAULT_BATCH_WAIT_MS). A wait of 0 turns micro-batching off.
    tile_batch: int | None = None
    batch_wait_ms: float | None = None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    cors_origins: tuple[str, ...] = ()
    api_keys: tuple[ApiKey, ...] = ()
    weights_path: Path | None = None
    model_tag: str = "hndsr:latest"
    max_bands: int = 64
    jobs_dir: Path = Path("jobs")
    max_job_pixels: int = 400_000_000
    max_job_upload_mb: float = 2048.0
    max_queued_jobs: int = 8
    job_retention_h: float = 24.0
    # A fleet's jobs: records in Postgres (else SQLite in jobs_dir), files in S3-compatible storage (else in
    # jobs_dir, which is then scratch only). The URL may hold a password: never printed.
    jobs_database_url: str | None = field(default=None, repr=False)
    jobs_storage_url: str | None = None
    job_lease_s: float = 30.0  # a running job whose replica has not renewed its lease this long is taken over
    replica_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # With a Redis URL the rate limit and queue depth are shared by every replica using it.
    redis_url: str | None = None
    # Distinct clients (IPs or keys) the in-process rate limiter tracks; beyond it the stalest are evicted.
    rate_limit_max_clients: int = 10_000
    # What counts as progress for body_idle_timeout_s: this much more of the body, or its end. Without it a
    # client sending one byte a second would never be idle; with it a body must come at 1.6 KB/s or faster.
    body_progress_bytes: int = 16 * 1024
    # The web page's map: an optional basemap of XYZ tiles (https://host/{z}/{x}/{y}.png); none by default, so the
    # page fetches nothing from outside the service.
    ui_basemap_url: str | None = None

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * 1024 * 1024)

    @property
    def max_job_upload_bytes(self) -> int:
        return int(self.max_job_upload_mb * 1024 * 1024)


def _parse(env: Mapping[str, str], name: str, default: T, convert: Callable[[str], T], check: Callable[[T], bool],
           allowed: str, secret: bool = False) -> T:
    """``env[name]`` converted and checked; a ``secret`` value (a URL with a password) is never quoted."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    shown = name if secret else f"{name}={raw!r}"
    try:
        value = convert(raw.strip())
    except ValueError:
        raise SettingsError(f"{shown} is invalid: expected {allowed}") from None
    if not check(value):
        raise SettingsError(f"{shown} is invalid: expected {allowed}")
    return value


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


KEY_FORBIDDEN = frozenset(",=")
MIN_KEY_LENGTH = 16


def _api_key(entry: str) -> ApiKey | None:
    """``KEY`` or ``KEY=LIMIT``; None when the entry is malformed (the caller names it, never its text)."""
    secret, _, limit = entry.partition("=")
    usable = (len(secret) >= MIN_KEY_LENGTH and secret.isascii() and secret.isprintable()
              and not any(c.isspace() or c in KEY_FORBIDDEN for c in secret))
    if not usable or (limit and not (limit.isdigit() and int(limit) > 0)):
        return None
    return ApiKey(secret, int(limit) if limit else None)


def _api_keys(env: Mapping[str, str]) -> tuple[ApiKey, ...]:
    """From ``API_KEYS`` (comma-separated) or ``API_KEYS_FILE`` (one entry a line, ``#`` comments).

    Error messages say which entry is wrong but never quote it: it may be someone's key.
    """
    listed, path = env.get("API_KEYS", "").strip(), env.get("API_KEYS_FILE", "").strip()
    if listed and path:
        raise SettingsError("API_KEYS and API_KEYS_FILE are both set: give the keys in one of them")
    if path:
        name = "API_KEYS_FILE"
        try:
            lines = Path(path).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"API_KEYS_FILE={path!r} is invalid: cannot read it ({exc})") from None
        entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        name, entries = "API_KEYS", [part.strip() for part in listed.split(",") if part.strip()]
    keys = []
    for number, entry in enumerate(entries, 1):
        key = _api_key(entry)
        if key is None:
            raise SettingsError(f"{name} entry {number} is invalid: expected KEY or KEY=LIMIT, KEY at least "
                                f"{MIN_KEY_LENGTH} visible ASCII characters other than , and =, LIMIT a positive "
                                "integer (requests per hour)")
        keys.append(key)
    if len({key.secret for key in keys}) < len(keys):
        raise SettingsError(f"{name} lists a key twice")
    return tuple(keys)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (default ``os.environ``); raises :class:`SettingsError`."""
    env = os.environ if env is None else env
    positive_int = (int, lambda v: v > 0, "a positive integer")
    positive_float = (float, lambda v: v > 0, "a positive number")
    d = Settings()
    tile_size = _parse(env, "TILE_SIZE", d.tile_size, int, lambda v: 32 <= v <= 2048, "an integer in 32..2048")
    return Settings(
        host=_parse(env, "HOST", d.host, str, lambda v: _is_ip(v) or v == "localhost", "an IP address"),
        port=_parse(env, "PORT", d.port, int, lambda v: 1 <= v <= 65535, "a port number 1..65535"),
        device=_parse(env, "DEVICE", d.device, str.lower, lambda v: v in {"auto", "cpu", "cuda"}, "auto, cpu or cuda"),
        inference_engine=_parse(env, "INFERENCE_ENGINE", d.inference_engine, str.lower, lambda v: v in ENGINES,
                                ", ".join(ENGINES)),
        max_queue_depth=_parse(env, "MAX_QUEUE_DEPTH", d.max_queue_depth, *positive_int),
        rate_limit_per_hour=_parse(env, "RATE_LIMIT_PER_HOUR", d.rate_limit_per_hour, *positive_int),
        max_payload_mb=_parse(env, "MAX_PAYLOAD_MB", d.max_payload_mb, *positive_float),
        max_image_pixels=_parse(env, "MAX_IMAGE_PIXELS", d.max_image_pixels, *positive_int),
        max_output_pixels=_parse(env, "MAX_OUTPUT_PIXELS", d.max_output_pixels, *positive_int),
        max_concurrent=_parse(env, "MAX_CONCURRENT", d.max_concurrent, *positive_int),
        request_timeout_s=_parse(env, "REQUEST_TIMEOUT_S", d.request_timeout_s, *positive_float),
        admit_by_speed=_parse(env, "ADMIT_BY_SPEED", d.admit_by_speed, _boolean, lambda v: True, "true or false"),
        body_idle_timeout_s=_parse(env, "BODY_IDLE_TIMEOUT_S", d.body_idle_timeout_s, *positive_float),
        drain_timeout_s=_parse(env, "DRAIN_TIMEOUT_S", d.drain_timeout_s, *positive_float),
        tile_size=tile_size,
        tile_overlap=_parse(env, "TILE_OVERLAP", d.tile_overlap, int, lambda v: 0 <= v < tile_size // 2,
                            f"an integer in 0..{tile_size // 2 - 1} (below half of TILE_SIZE)"),
        tile_batch=_parse(env, "TILE_BATCH", d.tile_batch, int, lambda v: 1 <= v <= 256, "an integer in 1..256"),
        batch_wait_ms=_parse(env, "BATCH_WAIT_MS", d.batch_wait_ms, float, lambda v: 0 <= v <= 50,
                             "a number of milliseconds in 0..50"),
        trusted_proxies=_parse(env, "TRUSTED_PROXIES", d.trusted_proxies, _networks, lambda v: True,
                               "comma-separated IP addresses or CIDR networks"),
        cors_origins=_parse(env, "CORS_ORIGINS", d.cors_origins, _csv, lambda v: True,
                            "comma-separated origins or *"),
        api_keys=_api_keys(env),
        weights_path=_parse(env, "WEIGHTS_PATH", d.weights_path, Path, lambda v: True, "a file path"),
        redis_url=_parse(env, "REDIS_URL", d.redis_url, str,
                         lambda v: v.startswith(("redis://", "rediss://", "unix://")),
                         "a redis://, rediss:// or unix:// URL"),
        model_tag=_parse(env, "MODEL_TAG", d.model_tag, str, lambda v: v.startswith("hndsr"), "a tag like hndsr:latest"),
        max_bands=_parse(env, "MAX_BANDS", d.max_bands, *positive_int),
        jobs_dir=_parse(env, "JOBS_DIR", d.jobs_dir, Path, lambda v: True, "a folder path"),
        max_job_pixels=_parse(env, "MAX_JOB_PIXELS", d.max_job_pixels, *positive_int),
        max_job_upload_mb=_parse(env, "MAX_JOB_UPLOAD_MB", d.max_job_upload_mb, *positive_float),
        max_queued_jobs=_parse(env, "MAX_QUEUED_JOBS", d.max_queued_jobs, *positive_int),
        job_retention_h=_parse(env, "JOB_RETENTION_H", d.job_retention_h, *positive_float),
        jobs_database_url=_parse(env, "JOBS_DATABASE_URL", d.jobs_database_url, str,
                                 lambda v: v.startswith(("postgresql://", "postgres://")),
                                 "a postgresql://USER:PASSWORD@HOST:PORT/DB URL", secret=True),
        jobs_storage_url=_parse(env, "JOBS_STORAGE_URL", d.jobs_storage_url, str,
                                lambda v: v.startswith("s3://") and len(v) > len("s3://") and v[5] != "/",
                                "an s3://BUCKET/PREFIX URL"),
        job_lease_s=_parse(env, "JOB_LEASE_S", d.job_lease_s, float, lambda v: 2 <= v <= 3600,
                           "a number of seconds in 2..3600"),
        ui_basemap_url=_parse(env, "UI_BASEMAP_URL", d.ui_basemap_url, str, _is_tile_template,
                              "an http(s) URL of XYZ tiles with {z}, {x} and {y} on one host (no {a-c} in the host)"),
        replica_id=_parse(env, "REPLICA_ID", d.replica_id, str, lambda v: 0 < len(v) <= 200 and v.isprintable(),
                          "a printable name of at most 200 characters"),
    )


def _boolean(raw: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if raw.lower() not in words:
        raise ValueError(raw)
    return words[raw.lower()]


def _is_tile_template(value: str) -> bool:
    """An XYZ tile URL on one plain host (the page's Content-Security-Policy names that host: no ``{a-c}`` host
    template, no user name or password in it)."""
    parsed = urllib.parse.urlsplit(value)
    return (parsed.scheme in ("http", "https") and bool(parsed.netloc) and not any(c in parsed.netloc for c in "{}@")
            and not any(c.isspace() for c in value) and all(part in value for part in ("{z}", "{x}", "{y}")))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed on first use."""
    return load_settings()


if __name__ == "__main__":
    # `python -m hndsr_service.settings`: check the environment before starting the server.
    import sys

    try:
        print(load_settings())
    except SettingsError as exc:
        sys.exit(f"configuration error: {exc}")
