"""Admission by the real server: rate limits per API key (shared in a real Redis), whatever the address, keys kept
out of logs and metrics; and a client that trickles its body gets 408 without holding a slot."""

from __future__ import annotations

import base64
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from hndsr_service.settings import ApiKey
from tests.helpers import encode, redis_server, rgb_image
from tests.integration.server import Server, serving

pytestmark = pytest.mark.integration

LIMIT = 3  # RATE_LIMIT_PER_HOUR: per key once API_KEYS is set
KEY = "team-a-key-0123456789"
OWN = "team-b-key-9876543210"  # with a limit of its own
OWN_LIMIT = 5
SPARE = "team-c-key-5555555555"  # enough for the slow-body tests, whatever ran before
IDLE_S = 3.0
SMALL = {"image": base64.b64encode(encode(rgb_image(16, 16))).decode(), "scale_factor": 2}


@dataclass
class Service:
    server: Server
    redis_url: str
    jobs_dir: Path


@pytest.fixture(scope="module")
def service(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    work = tmp_path_factory.mktemp("admission")
    keys = work / "keys"
    keys.write_text(f"# one key a line; KEY=LIMIT gives a key its own hourly limit\n{KEY}\n{OWN}={OWN_LIMIT}\n{SPARE}=1000\n")
    with redis_server(work) as url:
        env = {"API_KEYS_FILE": str(keys), "REDIS_URL": url, "RATE_LIMIT_PER_HOUR": str(LIMIT),
               "BODY_IDLE_TIMEOUT_S": str(IDLE_S), "MAX_CONCURRENT": "1", "JOBS_DIR": str(work / "jobs")}
        with serving(env, work / "server.log") as server:
            yield Service(server, url, work / "jobs")


def post(server: Server, key: str | None = None, source: str = "127.0.0.1", **headers: str) -> httpx.Response:
    """POST /infer from the loopback address ``source`` (127.x.y.z: each one a different client address)."""
    if key:
        headers["authorization"] = f"Bearer {key}"
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=60) as client:
        return client.post(f"{server.url}/infer", json=SMALL, headers=headers)


def test_missing_or_unknown_key_is_a_401_json_error(service: Service) -> None:
    for headers in ({}, {"authorization": "Bearer not-a-key-0123456789"}, {"x-api-key": KEY[:-1]},
                    {"authorization": f"Basic {KEY}"}):
        response = post(service.server, **headers)
        assert response.status_code == 401 and response.json()["error"] == "unauthorized", response.text
        assert response.headers["content-type"] == "application/json"
    assert httpx.get(f"{service.server.url}/ready").status_code == 200  # probes stay open


def test_the_limit_is_per_key_and_rotating_addresses_does_not_help(service: Service) -> None:
    server = service.server
    statuses = [post(server, KEY, f"127.0.1.{i}").status_code for i in range(LIMIT + 1)]
    assert statuses == [200] * LIMIT + [429]
    limited = post(server, KEY, "127.0.1.99")
    assert limited.status_code == 429 and "with this API key" in limited.json()["detail"]
    assert int(limited.headers["retry-after"]) > 0
    own = [post(server, OWN, f"127.0.2.{i}").status_code for i in range(OWN_LIMIT + 1)]
    assert own == [200] * OWN_LIMIT + [429]
    # The count lives in Redis (every replica shares it), under the key's fingerprint, never the key.
    records = {name.decode() for name in redis.Redis.from_url(service.redis_url).scan_iter("hndsr:rate:*")}
    assert records == {f"hndsr:rate:key:{ApiKey(key).fingerprint}" for key in (KEY, OWN)}


def test_keys_and_addresses_stay_out_of_logs_and_metrics(service: Service) -> None:
    post(service.server, KEY, "127.0.3.1")
    post(service.server, "wrong-key-but-long-enough", "127.0.3.2")
    text = httpx.get(f"{service.server.url}/metrics").text
    secrets = [KEY, OWN, "wrong-key-but-long-enough", *(ApiKey(k).fingerprint for k in (KEY, OWN))]
    assert not [s for s in secrets if s in text]
    assert "127.0." not in text and 'status="429"' in text and 'status="401"' in text
    log = service.server.log.read_text()
    assert "POST" in log and not [s for s in (KEY, OWN, "wrong-key-but-long-enough") if s in log]


def trickle(server: Server, request_head: bytes, body: bytes) -> tuple[bytes, float, bool]:
    """Send the head at once, then the body one byte a second until the server answers.

    Returns the raw answer, the seconds from the first body byte to it, and whether the server then closed
    the connection (within 5 s).
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(request_head + f"Content-Length: {len(body)}\r\n\r\n".encode())
        started = time.monotonic()
        for byte in body:
            conn.sendall(bytes([byte]))
            if select.select([conn], [], [], 1.0)[0]:
                break
        answer, deadline = b"", time.monotonic() + 5
        elapsed = time.monotonic() - started
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                # The server closed while body bytes it will never read were in flight: the kernel answers
                # those with a reset. The answer before it was already received.
                chunk = b""
            answer += chunk
            closed = not chunk
        return answer, elapsed, closed


def parse(answer: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_a_trickled_body_gets_408_and_holds_no_slot(service: Service, report) -> None:
    """One byte a second into /infer: 408 after BODY_IDLE_TIMEOUT_S, the connection closed; meanwhile it holds
    its queue place but not the only inference slot (MAX_CONCURRENT=1): another request is answered at once."""
    server = service.server
    head = (f"POST /infer HTTP/1.1\r\nHost: x\r\nX-API-Key: {SPARE}\r\n"
            "Content-Type: application/json\r\n").encode()
    outcome: dict[str, tuple[bytes, float, bool]] = {}
    slow = threading.Thread(target=lambda: outcome.setdefault("slow", trickle(server, head, json.dumps(SMALL).encode())))
    slow.start()
    deadline = time.monotonic() + IDLE_S / 2
    while (in_flight := httpx.get(f"{server.url}/health").json()["active_requests"]) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # until the server has admitted the slow request (its head is in)
    running = next(line for line in httpx.get(f"{server.url}/metrics").text.splitlines()
                   if line.startswith("hndsr_inferences_running "))
    served = post(server, SPARE)
    answered_first = slow.is_alive()
    slow.join()
    answer, elapsed, closed = outcome["slow"]
    status, headers, body = parse(answer)
    report(f"trickled body (1 byte/s): {status} {body['error']} after {elapsed:.1f} s "
           f"(BODY_IDLE_TIMEOUT_S={IDLE_S:g}); connection closed: {closed}")
    assert status == 408 and body["error"] == "body_timeout" and headers["connection"] == "close" and closed
    assert IDLE_S <= elapsed < IDLE_S + 3
    assert in_flight == 1 and running == "hndsr_inferences_running 0.0"
    assert served.status_code == 200 and answered_first  # served while the slow body was still trickling
    assert httpx.get(f"{server.url}/health").json()["active_requests"] == 0  # its queue place is free again
    assert 'hndsr_errors_total{error_type="body_timeout"} 1.0' in httpx.get(f"{server.url}/metrics").text
    assert "Traceback" not in server.log.read_text()  # the app was stopped, not failed


def test_a_trickled_job_upload_gets_408_and_leaves_nothing(service: Service) -> None:
    body = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.tif\"\r\n"
            b"Content-Type: image/tiff\r\n\r\n" + b"II*\x00" + bytes(64) + b"\r\n--b--\r\n")
    head = (f"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SPARE}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n").encode()
    status, _, error = parse(trickle(service.server, head, body)[0])
    assert status == 408 and error["error"] == "body_timeout"
    assert not service.jobs_dir.exists() or not [p for p in service.jobs_dir.iterdir() if p.is_dir()]
