"""The README's table of error statuses, walked: every (status, code) it lists is what a real server answers.

A code a plain request can reach is asked of a server configured for it (API keys, small limits); one that
needs a state no request makes (a killed worker, a full disk or queue, a failing GPU, a drain) names the test
that makes that state and checks it, and that test must exist and check that code.
"""

from __future__ import annotations

import ast
import base64
import io
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile

from tests.helpers import encode, rgb_image
from tests.integration.server import ROOT, Server, serving_in

pytestmark = pytest.mark.integration

KEY, LIMITED = "error-table-key-0123456789", "error-table-limited-0123456789"
ENV = {"API_KEYS": f"{KEY},{LIMITED}=1", "MAX_PAYLOAD_MB": "1", "MAX_IMAGE_PIXELS": "250000",
       "MAX_OUTPUT_PIXELS": "4000000", "MAX_BANDS": "3", "RATE_LIMIT_PER_HOUR": "1000"}
ROW = re.compile(r"^\| (?P<statuses>[^|]+) \| (?P<codes>[^|]+) \| .+ \|$")

# Codes only a state can produce: the test that makes the state and checks the code.
ELSEWHERE = {
    "overloaded": "tests/integration/test_server.py::test_deadline_and_shedding",
    "draining": "tests/integration/test_server.py::test_sigterm_drains_in_flight_then_exits",
    "body_timeout": "tests/integration/test_admission.py::test_a_trickled_body_gets_408_and_holds_no_slot",
    "too_slow_for_sync": "tests/integration/test_asgi_app.py::"
                         "test_work_past_the_deadline_at_the_measured_speed_is_refused_at_once",
    "jobs_queue_full": "tests/integration/test_jobs.py::test_queue_limit_answers_503_with_retry_after",
    "insufficient_storage": "tests/integration/test_jobs.py::test_job_that_cannot_fit_the_disk_is_refused_at_submit",
    "queue_timeout": "tests/integration/test_server.py::test_deadline_and_shedding",
    "inference_timeout": "tests/integration/test_server.py::test_deadline_and_shedding",
    "gpu_out_of_memory": "tests/integration/test_asgi_app.py::test_model_failures_keep_the_service_up",
    "model_unavailable": "tests/integration/test_faults.py::test_corrupt_weights_answer_503_with_the_reason",
    "internal_error": "tests/integration/test_asgi_app.py::test_model_failures_keep_the_service_up",
}


def readme_table() -> list[tuple[int, str]]:
    """``(status, code)`` of every row of the README's error table (a row may name several codes)."""
    text = (ROOT / "README.md").read_text()
    table = text.split("| Status | `error` | When |", 1)[1].split("\n\n", 1)[0]
    pairs = []
    for match in filter(None, map(ROW.match, table.splitlines()[2:])):  # below the header and its rule
        statuses = [int(s) for s in re.findall(r"\b\d{3}\b", match["statuses"])]
        groups = match["codes"].split(" / ")  # "404 / 409 / 410": one group of codes per status
        for status, group in zip(statuses * len(groups) if len(statuses) == 1 else statuses, groups, strict=True):
            pairs += [(status, code) for code in re.findall(r"`([a-z_]+)`", group)]
    return pairs


TABLE = readme_table()


@pytest.fixture(scope="module")
def server(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_in(tmp_path_factory.mktemp("error_table"), ENV) as server:
        yield server


def post(server: Server, path: str, key: str | None = KEY, **kwargs: object) -> httpx.Response:
    headers = {**({"x-api-key": key} if key else {}), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.post(f"{server.url}{path}", headers=headers, timeout=120, **kwargs)  # type: ignore[arg-type]


def infer(server: Server, image: bytes, **fields: object) -> httpx.Response:
    return post(server, "/infer", json={"image": base64.b64encode(image).decode(), **fields})


def geotiff(bands: int, size: int = 64) -> bytes:
    data, pixels = io.BytesIO(), np.full((bands, size, size), 1000, np.uint16)
    tifffile.imwrite(data, pixels if bands > 1 else pixels[0], photometric="minisblack",
                     planarconfig="separate" if bands > 1 else None)
    return data.getvalue()


def job(server: Server, raster: bytes, **fields: str) -> str:
    answer = post(server, "/jobs", files={"image": ("r.tif", raster, "image/tiff")}, data=fields)
    assert answer.status_code == 202, answer.text
    return answer.json()["job_id"]


def malformed(server: Server) -> httpx.Response:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    return httpx.Response(status, headers=headers, content=body)


def rate_limited(server: Server) -> httpx.Response:
    post(server, "/infer", key=LIMITED, json={"image": "eA=="})  # the key's limit: one request an hour
    return post(server, "/infer", key=LIMITED, json={"image": "eA=="})


def not_finished(server: Server) -> httpx.Response:
    job_id = job(server, geotiff(1, 512), scale_factor="4", ddim_steps="20", seed="1")
    answer = httpx.get(f"{server.url}/jobs/{job_id}/result", timeout=30)
    httpx.delete(f"{server.url}/jobs/{job_id}", headers={"x-api-key": KEY}, timeout=30)
    return answer


def failed_job_result(server: Server) -> httpx.Response:
    job_id = job(server, geotiff(1, 256)[:-20000], scale_factor="2")  # the header is whole, the pixels are not
    deadline = time.monotonic() + 120
    while httpx.get(f"{server.url}/jobs/{job_id}", timeout=30).json()["status"] not in ("failed", "succeeded"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    return httpx.get(f"{server.url}/jobs/{job_id}/result", timeout=30)


def deleted(server: Server) -> httpx.Response:
    job_id = job(server, geotiff(1, 32), scale_factor="2")
    httpx.delete(f"{server.url}/jobs/{job_id}", headers={"x-api-key": KEY}, timeout=30)
    return httpx.get(f"{server.url}/jobs/{job_id}", timeout=30)


REQUESTS: dict[str, Callable[[Server], httpx.Response]] = {
    "unauthorized": lambda s: post(s, "/infer", key=None, json={}),
    "rate_limited": rate_limited,
    "payload_too_large": lambda s: post(s, "/infer", content=b"x" * (2 << 20),
                                        headers={"content-type": "application/json"}),
    "invalid_image": lambda s: infer(s, b"not an image"),
    "invalid_request": lambda s: infer(s, encode(rgb_image(8, 8)), scale_factor=9),
    "malformed_request": malformed,
    "image_too_large": lambda s: infer(s, encode(rgb_image(600, 600))),
    "output_too_large": lambda s: infer(s, encode(rgb_image(400, 400)), scale_factor=8),
    "unsupported_media_type": lambda s: post(s, "/upscale", json={"image": "x"}),
    "not_acceptable": lambda s: post(s, "/upscale", files={"image": ("a.png", encode(rgb_image(8, 8)), "image/png")},
                                     headers={"accept": "image/png;q=0, image/jpeg;q=0, image/webp;q=0, "
                                                        "image/tiff;q=0, text/html"}),
    "job_not_found": lambda s: httpx.get(f"{s.url}/jobs/{'0' * 32}", timeout=30),
    "job_not_finished": not_finished,
    "job_has_no_result": failed_job_result,
    "job_deleted": deleted,
}


def test_the_table_lists_every_code_once_per_meaning_and_each_is_reached_somewhere() -> None:
    codes = {code for _, code in TABLE}
    assert len(TABLE) >= 25 and codes == set(REQUESTS) | set(ELSEWHERE), codes ^ (set(REQUESTS) | set(ELSEWHERE))


@pytest.mark.parametrize(("status", "code"), [p for p in TABLE if p[1] in REQUESTS], ids=lambda v: str(v))
def test_a_request_gets_the_status_the_table_says(server: Server, status: int, code: str) -> None:
    answer = REQUESTS[code](server)
    assert (answer.status_code, answer.json()["error"]) == (status, code), answer.text
    assert answer.headers["x-error-code"] == code and answer.json()["request_id"] == answer.headers["x-request-id"]


@pytest.mark.parametrize(("status", "code"), [p for p in TABLE if p[1] in ELSEWHERE], ids=lambda v: str(v))
def test_a_state_a_request_cannot_make_is_checked_by_its_test(status: int, code: str) -> None:
    path, name = ELSEWHERE[code].split("::")
    module = ast.parse((ROOT / path).read_text())
    test = next((f for f in module.body if isinstance(f, ast.FunctionDef) and f.name == name), None)
    assert test is not None, f"{ELSEWHERE[code]} does not exist"
    source = ast.unparse(test) + "".join(ast.unparse(d) for d in test.decorator_list)
    assert f"'{code}'" in source and str(status) in source, f"{ELSEWHERE[code]} does not check {status} {code}"
