"""Where a batch reads and writes: local paths, ``s3://`` objects (AWS S3, or MinIO, Ceph or any S3 API server
named by ``AWS_ENDPOINT_URL``) and ``https://`` URLs.

Rasters are never copied whole: GDAL reads them by ranges where they are (``/vsis3/``, ``/vsicurl/``). Outputs
appear at their final name only once complete: a local file is renamed into place, an object is one PUT (or a
completed multipart upload), which S3 makes visible all at once.
"""

from __future__ import annotations

import functools
import hashlib
import os
import urllib.request
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

S3 = "s3://"
HTTP = ("http://", "https://")
READ_CHUNK = 8 * 1024 * 1024
HTTP_TIMEOUT_S = 60


def storage_errors() -> tuple[type[BaseException], ...]:
    """What reading or writing a location raises: OS errors, and boto3's (a refused request, an unreachable
    endpoint) where boto3 is installed."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


def is_s3(uri: str) -> bool:
    return uri.startswith(S3)


def is_http(uri: str) -> bool:
    return uri.startswith(HTTP)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b.tif`` -> ``("bucket", "a/b.tif")``."""
    bucket, _, key = uri[len(S3):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, key


def s3_client() -> Any:
    """boto3's S3 client; it reads the endpoint (``AWS_ENDPOINT_URL``), region and credentials from the environment."""
    import boto3

    return boto3.session.Session().client("s3")


def gdal_options() -> dict[str, str]:
    """GDAL's own names for the S3 endpoint boto3 reads from ``AWS_ENDPOINT_URL``: GDAL does not read that one."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return {}
    parts = urlsplit(endpoint)
    return {"AWS_S3_ENDPOINT": parts.netloc, "AWS_HTTPS": "YES" if parts.scheme == "https" else "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE"}


def gdal_path(uri: str) -> str:
    """The name GDAL opens ``uri`` by: ``/vsis3/bucket/key``, ``/vsicurl/https://…``, or the local path."""
    if is_s3(uri):
        return "/vsis3/" + uri[len(S3):]
    if is_http(uri):
        return "/vsicurl/" + uri
    return uri


def read_text(uri: str) -> str:
    """A small text file (a STAC item) from a path, an object or a URL."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
    if is_http(uri):
        with urllib.request.urlopen(uri, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310 (http(s) only)
            return response.read().decode("utf-8")
    return Path(uri).read_text(encoding="utf-8")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Destination(ABC):
    """A batch's outputs: a local folder or an ``s3://BUCKET/PREFIX``. Every write is atomic."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def href(self, name: str) -> str:
        return f"{self.root}/{name}"

    @abstractmethod
    def size(self, name: str) -> int | None: ...

    @abstractmethod
    def sha256(self, name: str) -> str: ...

    @abstractmethod
    def read_text(self, name: str) -> str | None: ...

    @abstractmethod
    def write_text(self, name: str, text: str) -> None: ...

    @abstractmethod
    def put_file(self, path: Path, name: str) -> None: ...

    @abstractmethod
    def delete(self, name: str) -> None: ...


class FolderDestination(Destination):
    def __init__(self, root: str) -> None:
        super().__init__(str(Path(root).absolute()))

    def _path(self, name: str) -> Path:
        return Path(self.root) / name

    def size(self, name: str) -> int | None:
        path = self._path(name)
        return path.stat().st_size if path.is_file() else None

    def sha256(self, name: str) -> str:
        return sha256_file(self._path(name))

    def read_text(self, name: str) -> str | None:
        path = self._path(name)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def write_text(self, name: str, text: str) -> None:
        part = self._part(name)
        try:
            part.write_text(text, encoding="utf-8")
            os.replace(part, self._path(name))
        finally:
            part.unlink(missing_ok=True)

    def put_file(self, path: Path, name: str) -> None:
        """Copied beside its final name (another file system, perhaps), then renamed into place."""
        part = self._part(name)
        try:
            with path.open("rb") as src, part.open("wb") as dst:
                while chunk := src.read(READ_CHUNK):
                    dst.write(chunk)
            os.replace(part, self._path(name))
        finally:
            part.unlink(missing_ok=True)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def _part(self, name: str) -> Path:
        """A hidden working name in the same folder, so that the rename is atomic; never a reader's match. The
        folder is made here, at each write: a destination is kept per process, and the folder may go between runs."""
        Path(self.root).mkdir(parents=True, exist_ok=True)
        return Path(self.root) / f".{name}.{uuid.uuid4().hex[:8]}.part"


class S3Destination(Destination):
    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.bucket, prefix = split_s3(self.root)
        self.prefix = f"{prefix}/" if prefix else ""
        self.client = s3_client()

    def _key(self, name: str) -> str:
        return self.prefix + name

    def size(self, name: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(name))["ContentLength"])
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        for chunk in iter(lambda: body.read(READ_CHUNK), b""):
            digest.update(chunk)
        return digest.hexdigest()

    def read_text(self, name: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return body.read().decode("utf-8")

    def write_text(self, name: str, text: str) -> None:
        content_type = "application/json" if name.endswith(".json") else "text/plain"
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=text.encode("utf-8"),
                               ContentType=content_type)

    def put_file(self, path: Path, name: str) -> None:
        """One PUT, or a multipart upload that S3 shows only once completed (boto3 aborts it on failure)."""
        self.client.upload_file(str(path), self.bucket, self._key(name), ExtraArgs={"ContentType": "image/tiff"})

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))


def _missing(exc: Exception) -> bool:
    """A boto3 ClientError that says the object is not there (404 to a HEAD, NoSuchKey to a GET)."""
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=8)
def destination(root: str) -> Destination:
    """The destination at ``root``, one per process: every stage of every scene shares its S3 client."""
    if is_http(root):
        raise ValueError(f"--output {root!r}: a batch writes to a folder or to s3://BUCKET/PREFIX, not to a URL")
    return S3Destination(root) if is_s3(root) else FolderDestination(root)
