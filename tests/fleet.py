"""The fleet's components for tests (scripts/_fleet.py): skipped where Postgres is not installed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts._fleet import BUCKET, Postgres, S3Server, running_postgres, running_s3_server

__all__ = ["BUCKET", "Postgres", "S3Server", "postgres", "s3_server"]


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    try:
        server = running_postgres()
        started = server.__enter__()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield started
    finally:
        server.__exit__(None, None, None)


def s3_server(log: Path) -> contextlib.AbstractContextManager[S3Server]:
    return running_s3_server(log)
