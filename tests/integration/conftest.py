"""Fixtures for the deployment tests: Docker (skipped where it is absent) and the images they run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, docker

IMAGE = os.environ.get("HNDSR_TEST_IMAGE", "hndsr:test")


@pytest.fixture(scope="session")
def report(request: pytest.FixtureRequest):
    """Write a figure (image size, start-up time, failover counts) to the test log, past output capture."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n[deploy] {line}", flush=True)

    return write


@pytest.fixture(scope="session")
def docker_available() -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed (.ci/run installs Debian's docker.io and starts dockerd)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("dockerd is not running (.ci/run starts it)")


@pytest.fixture(scope="session")
def hndsr_image(docker_available: None, bentoml_home: Path, report) -> str:
    """The CPU image of this checkout, built by scripts/build --image (Docker's cache makes a rebuild quick)."""
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build.py"), "--image", IMAGE],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "QUIET": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE))
    report(f"image {IMAGE}: {size / 2**20:.0f} MiB, scripts/build --image took {time.monotonic() - start:.0f} s")
    return IMAGE


@pytest.fixture(scope="session")
def monitoring_images(docker_available: None) -> dict[str, str]:
    """Prometheus and Alertmanager built from Debian packages (scripts/docker-images monitoring)."""
    subprocess.run([str(ROOT / "scripts" / "docker-images"), "monitoring"], check=True, capture_output=True)
    return {"PROMETHEUS_IMAGE": "hndsr-prometheus:bookworm", "ALERTMANAGER_IMAGE": "hndsr-alertmanager:bookworm"}
