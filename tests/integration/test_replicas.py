"""`scripts/serve --replicas 3`: HAProxy (TLS) in front of three real replicas sharing their limits in Redis.

In file order: TLS, the global rate limit, a replica's worker SIGKILLed under load, a replica drained (SIGTERM)
under load, Redis going away, and SIGTERM stopping everything. Load is bounded, goes only to loopback, and
each request comes from its own loopback source address (127.x.y.z) so that the per-client rate limit only
binds where a test means it to.
"""

from __future__ import annotations

import base64
import csv
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import ROOT, encode, free_port, rgb_image

pytestmark = pytest.mark.integration
RATE_LIMIT = 20
SMALL = {"image": base64.b64encode(encode(rgb_image(32, 32))).decode(), "scale_factor": 2}
# About half a second of work on these CPUs, and small enough (< 256 KiB) for HAProxy to retry elsewhere.
MEDIUM = {"image": base64.b64encode(encode(rgb_image(96, 96))).decode(), "scale_factor": 4, "ddim_steps": 2}


@dataclass
class Cluster:
    url: str
    cert: Path
    process: subprocess.Popen
    log: Path
    logs: Path
    replicas: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (pid, port)
    redis_pid: int = 0

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        trust = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(base_url=self.url, verify=trust, timeout=120,
                            transport=httpx.HTTPTransport(verify=trust, local_address=source))

    def retries(self) -> int:
        """Requests HAProxy retried or redispatched to another replica so far (its stats socket)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.logs / "haproxy.sock"))
            sock.sendall(b"show stat\n")
            data = b"".join(iter(lambda: sock.recv(65536), b""))
        lines = data.decode().lstrip("# ").splitlines()
        rows = list(csv.DictReader(lines))
        return sum(int(r["wretr"] or 0) + int(r["wredis"] or 0) for r in rows if r["svname"] == "BACKEND")

    def metric(self, index: int, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.replicas[index][1]}/metrics", timeout=10).text
        return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def tool(name: str) -> None:
    if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists():
        pytest.skip(f"{name} is not installed (.ci/run installs Debian's haproxy and redis-server)")


@pytest.fixture(scope="module")
def cluster(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory, report) -> Iterator[Cluster]:
    for name in ("haproxy", "redis-server", "openssl"):
        tool(name)
    work = tmp_path_factory.mktemp("replicas")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "DEVICE": "cpu", "TLS_CERT": str(cert),
           "TLS_KEY": str(key), "RATE_LIMIT_PER_HOUR": str(RATE_LIMIT), "DRAIN_TIMEOUT_S": "20"}
    env.pop("REDIS_URL", None)
    log = work / "serve.log"
    start = time.monotonic()
    process = subprocess.Popen([str(ROOT / "scripts" / "serve"), "--replicas", "3", "--log-dir", str(work / "logs")],
                               cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    cluster = Cluster(f"https://127.0.0.1:{port}", cert, process, log, work / "logs")
    try:
        deadline = time.monotonic() + 300
        while "all 3 replicas ready" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        text = log.read_text()
        cluster.replicas = {int(i): (int(pid), int(p)) for i, pid, p in
                            re.findall(r"replica(\d) pid (\d+) on 127\.0\.0\.1:(\d+)", text)}
        cluster.redis_pid = int(re.search(r"redis-server pid (\d+)", text).group(1))
        report(f"replicas: scripts/serve --replicas 3 -> all ready in {time.monotonic() - start:.0f} s")
        yield cluster
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()


def post(source: str, cluster: Cluster, body: dict) -> httpx.Response:
    with cluster.client(source) as client:
        return client.post("/infer", json=body)


class Load:
    """``clients`` threads posting MEDIUM requests, each from a fresh source address, until stopped."""

    def __init__(self, cluster: Cluster, clients: int = 4, per_client: int = 80) -> None:
        self.cluster, self.stop = cluster, threading.Event()
        self.results: list[tuple[float, int, str | None]] = []
        self.threads = [threading.Thread(target=self._run, args=(c, per_client)) for c in range(clients)]

    def _run(self, client: int, count: int) -> None:
        for n in range(count):
            if self.stop.is_set():
                return
            try:
                response = post(f"127.{100 + client}.{n // 250}.{n % 250 + 1}", self.cluster, MEDIUM)
                self.results.append((time.monotonic(), response.status_code, response.headers.get("retry-after")))
            except httpx.HTTPError as exc:
                self.results.append((time.monotonic(), -1, type(exc).__name__))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=180)

    def figures(self) -> dict[str, int]:
        statuses = Counter(status for _, status, _ in self.results)
        return {"sent": len(self.results), "accepted": statuses[200], "shed": statuses[503],
                "failed": len(self.results) - statuses[200] - statuses[503]}

    def check(self, after: float) -> None:
        """Only 200s and 503s with Retry-After, and 200s after ``after`` (the survivors kept serving)."""
        odd = [(status, detail) for _, status, detail in self.results if status not in (200, 503)]
        assert not odd, f"{len(odd)} requests failed: {odd[:5]}"
        assert all(detail for _, status, detail in self.results if status == 503), "503 without Retry-After"
        assert sum(1 for t, status, _ in self.results if status == 200 and t > after) >= 4


def test_tls_is_terminated_at_haproxy(cluster: Cluster) -> None:
    with cluster.client() as client:
        assert client.get("/ready").status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(cluster.url.replace("https://", "http://") + "/ready", timeout=10)
    with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused by the client
        httpx.get(f"{cluster.url}/ready", timeout=10)


def test_rate_limit_holds_across_replicas(cluster: Cluster) -> None:
    before = {i: cluster.metric(i, 'hndsr_requests_total{endpoint="/infer",status="200"}') for i in cluster.replicas}
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: post("127.0.0.20", cluster, SMALL), range(RATE_LIMIT + 6)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: RATE_LIMIT, 429: 6}, statuses
    assert all(r.headers["retry-after"] for r in responses if r.status_code == 429)
    served = {i: cluster.metric(i, 'hndsr_requests_total{endpoint="/infer",status="200"}') - before[i]
              for i in cluster.replicas}
    assert sum(served.values()) == RATE_LIMIT and sum(1 for n in served.values() if n) >= 2, served
    assert post("127.0.0.21", cluster, SMALL).status_code == 200  # another client is not limited


def test_sigkill_of_a_replica_worker_under_load_loses_nothing(cluster: Cluster, report) -> None:
    pid = cluster.replicas[2][0]
    retried = cluster.retries()
    with Load(cluster) as load:
        time.sleep(4)
        workers = psutil.Process(pid).children(recursive=True)
        assert workers, "replica 2 has no worker process"
        for worker in workers:
            worker.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(15)
    report(f"replicas: worker of replica 2 SIGKILLed under load: {load.figures()}, "
           f"{cluster.retries() - retried} retried on another replica by HAProxy")
    load.check(after=killed)


def test_sigterm_of_a_replica_under_load_drains_it(cluster: Cluster, report) -> None:
    replica = psutil.Process(cluster.replicas[3][0])
    retried = cluster.retries()
    with Load(cluster) as load:
        time.sleep(4)
        replica.send_signal(signal.SIGTERM)
        drained = time.monotonic()
        replica.wait(timeout=60)
        deadline = time.monotonic() + 5
        while "replica3 exited with" not in cluster.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "replica3 exited with 0" in cluster.log.read_text(), cluster.log.read_text()[-2000:]
        report(f"replicas: replica 3 drained and exited 0 in {time.monotonic() - drained:.1f} s")
        time.sleep(4)
    report(f"replicas: replica 3 SIGTERMed under load: {load.figures()}, "
           f"{cluster.retries() - retried} retried on another replica by HAProxy")
    load.check(after=drained)


def test_redis_going_away_degrades_to_per_replica_limits(cluster: Cluster) -> None:
    redis = psutil.Process(cluster.redis_pid)
    redis.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "redis-server exited" not in cluster.log.read_text():
        assert time.monotonic() < deadline, cluster.log.read_text()[-2000:]
        time.sleep(0.2)
    responses = [post("127.0.0.30", cluster, SMALL) for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 6
    assert cluster.metric(1, "hndsr_shared_limits_degraded") == 1
    assert cluster.metric(1, "hndsr_redis_errors_total") >= 1
    warnings = (cluster.logs / "replica1.log").read_text().count("Redis unavailable")
    assert warnings == 1, f"{warnings} warnings in replica1.log"


def test_sigterm_stops_haproxy_and_every_replica(cluster: Cluster) -> None:
    children = psutil.Process(cluster.process.pid).children(recursive=True)
    cluster.process.send_signal(signal.SIGTERM)
    assert cluster.process.wait(timeout=90) == 0, cluster.log.read_text()[-3000:]
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{cluster.url}/ready", verify=ssl.create_default_context(cafile=str(cluster.cert)), timeout=5)
