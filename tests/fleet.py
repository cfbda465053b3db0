"""The fleet's components for tests (hndsr_service/local_fleet.py): skipped where Postgres is not installed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from hndsr_service.local_fleet import BUCKET, Postgres, S3Server, pg_bindir, running_postgres
from hndsr_service.local_fleet import running_s3_server as s3_server

__all__ = ["BUCKET", "Postgres", "S3Server", "postgres", "s3_server"]


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    if pg_bindir() is None:
        pytest.skip("Postgres is not installed (.ci/run installs Debian's postgresql)")
    with running_postgres() as server:
        yield server
