"""Shared fixtures: a private BentoML home with the model registered, and a private Redis.

Helpers (paths, synthetic images, servers) are in tests/helpers.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import redis_server

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A BentoML home of the test session's own, with the committed weights registered."""
    home = tmp_path_factory.mktemp("bentoml_home")
    previous = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    from bentoml._internal.configuration.containers import BentoMLContainer

    BentoMLContainer.bentoml_home.set(str(home))
    from hndsr_service.model_store import register

    register()
    yield home
    if previous is None:
        os.environ.pop("BENTOML_HOME", None)
    else:
        os.environ["BENTOML_HOME"] = previous


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server of the test's own (skipped where Debian's redis-server is not installed)."""
    with redis_server(tmp_path) as url:
        yield url
