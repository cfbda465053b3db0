"""The one owner of a job's files: its upload, its tile-row checkpoints and its result.

:class:`LocalFiles` keeps them under ``JOBS_DIR/<id>/`` (one host; replicas sharing the folder);
:class:`S3Files` in S3-compatible object storage under ``s3://BUCKET/PREFIX/<id>/`` (a fleet), configured
by the standard AWS variables. Either way each run of a job works in a scratch folder of its own,
``JOBS_DIR/<id>/work-<attempt>/`` (attempt 0: the submission), so that two replicas sharing ``JOBS_DIR`` never
write into each other's files, even while one of them has not yet noticed that it lost the job.
A storage call that fails for the network or the server is retried for :data:`STORAGE_PATIENCE_S`, then
raises :class:`StorageUnavailable`; credentials never appear in its message.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

INPUT_NAME = "input"
RESULT_NAME = "result.tif"
WORK_PREFIX = "work-"
ROWS = "rows"  # the folder, or key prefix, of the tile-row checkpoints
STORAGE_PATIENCE_S = 120.0  # how long a storage call keeps retrying before the job fails for it
CHUNK_BYTES = 1 << 20
T = TypeVar("T")


def row_name(row: int) -> str:
    """Where a tile row's checkpoint is kept, below the job's folder or key prefix."""
    return f"{ROWS}/{row:06d}"


class StorageUnavailable(Exception):
    """The object storage did not answer for :data:`STORAGE_PATIENCE_S`."""


@dataclass(frozen=True)
class StoredResult:
    """A job's result where the routes can serve it: a local file, or an object read by byte ranges."""

    size: int
    path: Path | None = None  # a local file (served by Starlette's FileResponse, Range included)
    read_range: Callable[[int, int], Iterator[bytes]] | None = None  # bytes [start, end] of an object
    etag: str | None = None  # the object's entity tag, quoted (a local file's is Starlette's)


class JobFiles(ABC):
    def __init__(self, jobs_dir: Path) -> None:
        self.jobs_dir = jobs_dir

    def scratch(self, job_id: str, attempt: int) -> Path:
        """The working folder of one run of the job (``attempt``; 0 for its submission), on this machine."""
        return self.jobs_dir / job_id / f"{WORK_PREFIX}{attempt}"

    def drop_scratch(self, job_id: str, attempt: int) -> None:
        shutil.rmtree(self.scratch(job_id, attempt), ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.jobs_dir / job_id).rmdir()  # the job's folder, once nothing else of it is here

    def scratch_folders(self) -> Iterator[tuple[str, int]]:
        """``(job id, attempt)`` of every scratch folder on this machine (for sweeping those of finished runs)."""
        for folder in self.jobs_dir.glob(f"*/{WORK_PREFIX}*"):
            attempt = folder.name.removeprefix(WORK_PREFIX)
            if attempt.isdigit():
                yield folder.parent.name, int(attempt)

    def scratch_idle_s(self, job_id: str, attempt: int) -> float:
        """Seconds since anything in the scratch folder last changed (0 if it is gone)."""
        folder = self.scratch(job_id, attempt)
        try:
            newest = max(path.stat().st_mtime for path in (folder, *folder.rglob("*")))
        except (FileNotFoundError, ValueError):
            return 0.0
        return time.time() - newest

    @abstractmethod
    def store_input(self, job_id: str, upload: Path) -> None:
        """Keep the validated upload (a file in the job's scratch) as the job's input."""

    @abstractmethod
    def input(self, job_id: str, attempt: int) -> Path:
        """A local path of the job's input (fetched into the run's scratch when it lives elsewhere)."""

    @abstractmethod
    def put_row(self, job_id: str, row: int, data: bytes) -> None: ...

    @abstractmethod
    def get_row(self, job_id: str, row: int) -> bytes: ...

    @abstractmethod
    def store_result(self, job_id: str, product: Path) -> None:
        """Keep the finished product (a file in the scratch) as the job's result."""

    @abstractmethod
    def drop_checkpoints(self, job_id: str) -> None:
        """Delete the job's row checkpoints (once its success is recorded: until then a run may resume from them)."""

    @abstractmethod
    def result(self, job_id: str) -> StoredResult | None:
        """The result, or None when it is gone (deleted meanwhile)."""

    @abstractmethod
    def delete(self, job_id: str) -> None:
        """Remove every file of the job, in storage and in this replica's scratch."""


class LocalFiles(JobFiles):
    """Files under ``JOBS_DIR/<id>/``: ``input``, ``rows/<n>``, ``result.tif``."""

    def folder(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def store_input(self, job_id: str, upload: Path) -> None:
        upload.replace(self.folder(job_id) / INPUT_NAME)

    def input(self, job_id: str, attempt: int) -> Path:
        return self.folder(job_id) / INPUT_NAME

    def put_row(self, job_id: str, row: int, data: bytes) -> None:
        target = self.folder(job_id) / row_name(row)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{os.getpid()}")
        staging.write_bytes(data)
        staging.replace(target)  # a reader sees a whole checkpoint or none

    def get_row(self, job_id: str, row: int) -> bytes:
        return (self.folder(job_id) / row_name(row)).read_bytes()

    def store_result(self, job_id: str, product: Path) -> None:
        product.replace(self.folder(job_id) / RESULT_NAME)

    def drop_checkpoints(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id) / ROWS, ignore_errors=True)

    def result(self, job_id: str) -> StoredResult | None:
        path = self.folder(job_id) / RESULT_NAME
        try:
            return StoredResult(path.stat().st_size, path=path)
        except FileNotFoundError:
            return None

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)


class S3Files(JobFiles):
    """Files in S3-compatible storage: ``s3://BUCKET/PREFIX/<id>/input``, ``.../rows/<n>``, ``.../result.tif``."""

    def __init__(self, jobs_dir: Path, url: str, patience_s: float = STORAGE_PATIENCE_S) -> None:
        super().__init__(jobs_dir)
        parsed = urlparse(url)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.patience_s = patience_s
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:  # on first use: no connection at import or start-up
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2, "mode": "standard"})
            self._client = boto3.session.Session().client("s3", config=config)
        return self._client

    def key(self, job_id: str, name: str) -> str:
        return "/".join(part for part in (self.prefix, job_id, name) if part)

    def store_input(self, job_id: str, upload: Path) -> None:
        self._call(lambda: self.client.upload_file(str(upload), self.bucket, self.key(job_id, INPUT_NAME)))
        upload.unlink()

    def input(self, job_id: str, attempt: int) -> Path:
        local = self.scratch(job_id, attempt) / INPUT_NAME
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            staging = local.with_name(f".{INPUT_NAME}.part")
            self._call(lambda: self.client.download_file(self.bucket, self.key(job_id, INPUT_NAME), str(staging)))
            staging.replace(local)
        return local

    def put_row(self, job_id: str, row: int, data: bytes) -> None:
        self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=self.key(job_id, row_name(row)),
                                                  Body=data))

    def get_row(self, job_id: str, row: int) -> bytes:
        return self._call(lambda: self.client.get_object(Bucket=self.bucket, Key=self.key(job_id, row_name(row)))
                          ["Body"].read())

    def store_result(self, job_id: str, product: Path) -> None:
        self._call(lambda: self.client.upload_file(str(product), self.bucket, self.key(job_id, RESULT_NAME),
                                                   ExtraArgs={"ContentType": "image/tiff"}))
        product.unlink()

    def drop_checkpoints(self, job_id: str) -> None:
        self._delete_prefix(self.key(job_id, f"{ROWS}/"))

    def result(self, job_id: str) -> StoredResult | None:
        from botocore.exceptions import ClientError

        key = self.key(job_id, RESULT_NAME)
        try:
            head = self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

        etag = head["ETag"]

        def read_range(start: int, end: int) -> Iterator[bytes]:
            """Bytes [start, end]; a read cut off mid-stream goes on from where it stopped (the same object:
            ``IfMatch``), within the storage's patience, so that a download is never silently short."""
            from botocore.exceptions import BotoCoreError

            position, deadline = start, None
            while position <= end:
                body = self._call(lambda at=position: self.client.get_object(
                    Bucket=self.bucket, Key=key, IfMatch=etag, Range=f"bytes={at}-{end}")["Body"])
                try:
                    for chunk in body.iter_chunks(CHUNK_BYTES):
                        position += len(chunk)
                        deadline = None  # reading again: the next interruption gets all the patience
                        yield chunk
                except BotoCoreError as exc:  # the connection reset or timed out mid-body
                    body.close()
                    deadline = deadline or time.monotonic() + self.patience_s
                    if time.monotonic() > deadline:
                        raise StorageUnavailable(f"object storage s3://{self.bucket} cut the result off at byte "
                                                 f"{position} for {self.patience_s:g} s ({type(exc).__name__})"
                                                 ) from None
                    time.sleep(0.5)

        return StoredResult(int(head["ContentLength"]), read_range=read_range, etag=etag)

    def delete(self, job_id: str) -> None:
        self._delete_prefix(self.key(job_id, ""))
        shutil.rmtree(self.jobs_dir / job_id, ignore_errors=True)  # this machine's scratch of it

    def _delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix)))
        keys = [{"Key": item["Key"]} for page in pages for item in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = keys[start:start + 1000]
            self._call(lambda batch=batch: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch}))

    def _call(self, call: Callable[[], T]) -> T:
        """``call()``, retried while the storage cannot be reached, for at most :attr:`patience_s`."""
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + self.patience_s
        wait = 0.5
        while True:
            try:
                return call()
            except ClientError as exc:
                if int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) < 500:
                    raise
                reason = f"the storage answered {exc.response['ResponseMetadata']['HTTPStatusCode']}"
            except BotoCoreError as exc:  # connection refused or reset, timeouts
                reason = type(exc).__name__
            if time.monotonic() + wait > deadline:
                raise StorageUnavailable(f"object storage s3://{self.bucket} did not answer for "
                                         f"{self.patience_s:g} s ({reason})") from None
            time.sleep(wait)
            wait = min(wait * 2, 5.0)


def open_files(storage_url: str | None, jobs_dir: Path) -> JobFiles:
    """``JOBS_STORAGE_URL`` (``s3://BUCKET/PREFIX``), else the files in ``JOBS_DIR``."""
    return S3Files(jobs_dir, storage_url) if storage_url else LocalFiles(jobs_dir)
