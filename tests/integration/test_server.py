"""The real server process over HTTP: real images, the Python client, backpressure, cancellation, drain."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import pytest
import rasterio
from PIL import Image
from rasterio.io import MemoryFile

from tests.helpers import DATA, encode, requires_data, rgb_image
from tests.integration.server import Server, serving

pytestmark = pytest.mark.integration

# One inference slot and room for three in flight make every backpressure path reachable; the deadline is
# long enough for SLOW to finish (the deadline test starts a server of its own with a 1 s one).
ENV = {"MAX_CONCURRENT": "1", "REQUEST_TIMEOUT_S": "60", "MAX_QUEUE_DEPTH": "3", "RATE_LIMIT_PER_HOUR": "1000"}
SLOW = {"image": base64.b64encode(encode(rgb_image(128, 128))).decode(), "scale_factor": 8, "ddim_steps": 20,
        "seed": 1}


@pytest.fixture(scope="module")
def server(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(ENV, tmp_path_factory.mktemp("server") / "server.log") as srv:
        yield srv


def metric_value(server: Server, line_prefix: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@requires_data("rsscn7", "val")
def test_infer_real_image_over_http(server: Server) -> None:
    path = sorted((DATA / "rsscn7" / "val").rglob("*.jpg"))[0]
    response = httpx.post(f"{server.url}/infer", json={"image": base64.b64encode(path.read_bytes()).decode(),
                                                       "scale_factor": 2}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (800, 800) and body["metadata"]["model"] == "hndsr"


@requires_data("geotiff")
def test_upscale_geotiff_multipart(server: Server) -> None:
    path = DATA / "geotiff" / "scene_1_Landsat-8.tif"
    with path.open("rb") as fh:
        response = httpx.post(f"{server.url}/upscale", files={"image": (path.name, fh, "image/tiff")},
                              data={"scale_factor": "3"}, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "image/tiff"
    with MemoryFile(response.content) as mem, mem.open() as product, rasterio.open(path) as source:
        assert (product.width, product.height, product.crs) == (768, 768, source.crs)
        assert product.bounds == source.bounds


def test_python_client(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(rgb_image(20, 30)).save(source)
    with bentoml.SyncHTTPClient(server.url) as client:
        result = client.infer(image=base64.b64encode(source.read_bytes()).decode(), scale_factor=2)
        body = result if isinstance(result, dict) else result.model_dump()
        assert (body["width"], body["height"]) == (60, 40)
        out = client.upscale(image=source, scale_factor=3)
        assert Image.open(out).size == (90, 60) and out.name.endswith("hndsr-x3.png")


def test_probes_never_limited_and_version(server: Server) -> None:
    version = httpx.get(f"{server.url}/version").json()
    assert version["api_version"] and version["device"] == "cpu"
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.get(f"{server.url}/livez").status_code == 200


def test_client_disconnect_stops_inference(server: Server) -> None:
    assert_disconnect_stops_inference(server)


def assert_disconnect_stops_inference(server: Server) -> None:
    label = 'hndsr_inference_cancelled_total{reason="client_disconnected"}'
    before = metric_value(server, label)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/infer", json=SLOW, timeout=0.8)
    deadline = time.monotonic() + 10
    while metric_value(server, label) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric_value(server, label) == before + 1


def test_a_request_the_http_server_cannot_parse_gets_the_envelope(server: Server) -> None:
    """uvicorn refuses these before the application sees them; the answer is still ours, and counted."""
    host, port = server.url.removeprefix("http://").split(":")
    before = metric_value(server, 'hndsr_errors_total{error_type="malformed_request"}')
    for request in (b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"GET /health HTTP/1.1\r\nHost: x\r\nbroken header\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(request)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head.lower()
        envelope = json.loads(body)
        assert envelope["error"] == "malformed_request" and len(envelope["request_id"]) == 32
        assert f"x-request-id: {envelope['request_id']}".encode() in head.lower()
    assert metric_value(server, 'hndsr_errors_total{error_type="malformed_request"}') == before + 2


def test_unknown_paths_do_not_grow_series(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        for i in range(1000):
            client.get(f"/random-{i}")
    text = httpx.get(f"{server.url}/metrics").text
    assert "random-" not in text and 'endpoint="other",status="404"' in text


def test_deadline_and_shedding(bentoml_home: Path, tmp_path: Path) -> None:
    # A second server on the same BENTOML_HOME empties the module server's multiprocess metrics directory
    # (BentoML cleans it at start-up), so like the CORS test this runs after the tests that read metrics.
    # ADMIT_BY_SPEED off: the slow requests are started (the measured speed would refuse them at once).
    server = Server({**ENV, "REQUEST_TIMEOUT_S": "1", "ADMIT_BY_SPEED": "false"}, tmp_path / "deadline.log")
    try:
        server.wait_ready()
        results, shed = overload(server)
    finally:
        server.stop()
    assert shed.status_code == 503 and shed.headers["retry-after"] == "5" and shed.json()["error"] == "overloaded"
    # One deadline (REQUEST_TIMEOUT_S = 1 s) covers the wait for the single slot and the inference: the
    # request holding the slot is stopped at it, those waiting behind it give up at theirs.
    assert {status for status, _ in results} == {504}
    assert {error for _, error in results} <= {"inference_timeout", "queue_timeout"}
    assert "inference_timeout" in {error for _, error in results}


def overload(server: Server) -> tuple[list[tuple[int, str]], httpx.Response]:
    """Three slow requests in flight, then a fourth: the answers of the three and the fourth's."""
    results: list[tuple[int, str]] = []

    def post() -> None:
        response = httpx.post(f"{server.url}/infer", json=SLOW, timeout=120)
        results.append((response.status_code, response.json().get("error", "")))

    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    time.sleep(0.2)
    shed = httpx.post(f"{server.url}/infer", json=SLOW, timeout=30)
    assert metric_value(server, "hndsr_backpressure_rejected_total") >= 1
    for t in threads:
        t.join()
    return results, shed


def test_cors_origins_without_credentials(bentoml_home: Path, tmp_path: Path) -> None:
    srv = Server({"CORS_ORIGINS": "https://maps.example"}, tmp_path / "cors.log")
    try:
        srv.wait_ready()
        asked = {"access-control-request-method": "POST"}
        allowed = httpx.options(f"{srv.url}/infer", headers={"origin": "https://maps.example", **asked})
        assert allowed.headers["access-control-allow-origin"] == "https://maps.example"
        assert "access-control-allow-credentials" not in allowed.headers
        other = httpx.options(f"{srv.url}/infer", headers={"origin": "https://evil.example", **asked})
        assert "access-control-allow-origin" not in other.headers
    finally:
        srv.stop()


def test_sigterm_drains_in_flight_then_exits(server: Server) -> None:
    outcome: dict[str, int] = {}

    def post() -> None:
        outcome["status"] = httpx.post(f"{server.url}/infer", json=SLOW, timeout=120).status_code

    worker = threading.Thread(target=post)
    worker.start()
    time.sleep(0.8)
    server.terminate()
    ready = httpx.get(f"{server.url}/ready", timeout=5)
    assert ready.status_code == 503 and "draining" in ready.json()["reason"]
    refused = httpx.post(f"{server.url}/infer", json=SLOW, timeout=5)
    assert refused.status_code == 503 and refused.json()["error"] == "draining"
    assert httpx.get(f"{server.url}/health", timeout=5).json()["active_requests"] == 1
    worker.join()
    assert outcome["status"] == 200
    server.process.wait(timeout=35)
