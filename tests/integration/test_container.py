"""The CPU image and the Compose stack, built and started with the real Docker here.

Skipped where Docker is absent; .ci/run installs Debian's docker.io and docker-compose and starts dockerd.
Traffic goes only to ports published on 127.0.0.1 by containers these tests start, and every container,
network and volume they create is removed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.helpers import ROOT, docker, encode, free_port, rgb_image

pytestmark = pytest.mark.integration
SMALL = {"image": base64.b64encode(encode(rgb_image(32, 32))).decode(), "scale_factor": 2}
# About 5 s on two shared CPU cores: long enough to be in flight when the container is stopped.
SLOW = {"image": base64.b64encode(encode(rgb_image(256, 256))).decode(), "scale_factor": 4, "ddim_steps": 8}


def wait_healthy(container: str, timeout: float = 180) -> float:
    """Seconds until Docker's health check reports healthy."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        state = json.loads(docker("inspect", "-f", "{{json .State}}", container))
        if state["Health"]["Status"] == "healthy":
            return time.monotonic() - start
        assert state["Running"], docker("logs", container, check=False)
        time.sleep(0.5)
    raise AssertionError(f"{container} not healthy after {timeout} s:\n{docker('logs', container, check=False)}")


@pytest.fixture(scope="module")
def container(hndsr_image: str, report) -> Iterator[tuple[str, str]]:
    name = f"hndsr-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    start = time.monotonic()
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-e", "DEVICE=cpu", hndsr_image,
           "serve", "--timeout-graceful-shutdown", "30")
    try:
        healthy = wait_healthy(name)
        report(f"container: docker run -> healthy in {healthy:.0f} s ({time.monotonic() - start:.0f} s with run)")
        yield name, f"http://127.0.0.1:{port}"
    finally:
        docker("rm", "-f", name, check=False)


def test_container_serves_through_the_published_port(container: tuple[str, str]) -> None:
    name, url = container
    assert httpx.get(f"{url}/ready", timeout=10).status_code == 200
    response = httpx.post(f"{url}/infer", json=SMALL, timeout=60)
    assert response.status_code == 200 and response.json()["width"] == 64
    assert httpx.get(f"{url}/version", timeout=10).json()["device"] == "cpu"


def test_container_runs_as_a_non_root_user(container: tuple[str, str], hndsr_image: str) -> None:
    name, _ = container
    assert docker("image", "inspect", "-f", "{{.Config.User}}", hndsr_image) == "bentoml"
    assert docker("exec", name, "id", "-u") != "0"
    assert docker("exec", name, "python", "-c", "import torch; print(torch.__version__)").endswith("+cpu")


def test_docker_stop_drains_the_in_flight_request(container: tuple[str, str], report) -> None:
    """Runs last in this module: it stops the container."""
    name, url = container
    result: dict[str, object] = {}

    def slow_request() -> None:
        result["response"] = httpx.post(f"{url}/infer", json=SLOW, timeout=120)

    worker = threading.Thread(target=slow_request)
    worker.start()
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/health", timeout=5).json()["active_requests"] < 1:
        assert time.monotonic() < deadline, "the slow request never arrived"
        time.sleep(0.05)
    start = time.monotonic()
    docker("stop", "-t", "45", name, timeout=90)
    stopped = time.monotonic() - start
    worker.join(timeout=60)
    response = result["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 200, response
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name) == "0"
    assert "SIGTERM: draining 1 in-flight requests" in docker("logs", name, check=False) + subprocess.run(
        ["docker", "logs", name], capture_output=True, text=True).stderr
    report(f"container: docker stop with one request in flight: it finished (200), exit 0 after {stopped:.1f} s")


def compose(project: str, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    result = subprocess.run(["docker-compose", "-p", project, *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack(hndsr_image: str, monitoring_images: dict[str, str], report) -> Iterator[dict[str, str]]:
    """docker-compose up of the repo's file on a CPU host (no GPU override), images built here; Grafana has
    no Debian package, so it is not started (its provisioning is checked in test_monitoring)."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's docker-compose)")
    project = f"hndsrtest{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("api", "prometheus", "alertmanager")}
    env = {"HNDSR_IMAGE": hndsr_image, **monitoring_images, "DEVICE": "cpu",
           "HNDSR_PORT": f"127.0.0.1:{ports['api']}", "PROMETHEUS_PORT": f"127.0.0.1:{ports['prometheus']}",
           "ALERTMANAGER_PORT": f"127.0.0.1:{ports['alertmanager']}"}
    start = time.monotonic()
    try:
        compose(project, env, "up", "-d", "hndsr-api", "prometheus", "alertmanager")
        wait_healthy(f"{project}_hndsr-api_1")
        report(f"compose: up -> API healthy in {time.monotonic() - start:.0f} s")
        yield {"project": project, **{k: f"http://127.0.0.1:{v}" for k, v in ports.items()}}
    finally:
        compose(project, env, "down", "-v", "--remove-orphans", timeout=120)


def poll(url: str, check, timeout: float = 90) -> object:
    """GET ``url`` until ``check(json)`` is truthy; returns that value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=5).json()
            if value := check(last):
                return value
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise AssertionError(f"{url}: condition not met in {timeout} s; last answer {last}")


def test_compose_stack_api_prometheus_and_alertmanager(stack: dict[str, str]) -> None:
    assert httpx.get(f"{stack['api']}/ready", timeout=10).status_code == 200
    assert httpx.post(f"{stack['api']}/infer", json=SMALL, timeout=60).status_code == 200
    targets = poll(f"{stack['prometheus']}/api/v1/targets",
                   lambda body: [t for t in body["data"]["activeTargets"] if t["health"] == "up"])
    assert [t["labels"]["job"] for t in targets] == ["hndsr-api"]
    assert poll(f"{stack['prometheus']}/api/v1/query?query=hndsr_model_ready",
                lambda body: body["data"]["result"])[0]["value"][1] == "1"
    rules = httpx.get(f"{stack['prometheus']}/api/v1/rules", timeout=10).json()["data"]["groups"]
    in_file = [r for g in yaml.safe_load((ROOT / "monitoring" / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert len([r for g in rules for r in g["rules"]]) == len(in_file)
    managers = httpx.get(f"{stack['prometheus']}/api/v1/alertmanagers", timeout=10).json()["data"]
    assert [m["url"] for m in managers["activeAlertmanagers"]] == ["http://alertmanager:9093/api/v2/alerts"]
    assert httpx.get(f"{stack['alertmanager']}/-/ready", timeout=10).status_code == 200
    # the address Prometheus notifies, resolved and reached from inside the stack's network
    docker("exec", f"{stack['project']}_hndsr-api_1", "python", "-c",
           "import urllib.request; assert urllib.request.urlopen('http://alertmanager:9093/-/ready').status == 200")
