"""Load on the real server: the short form of benchmarks/load_soak.py (a minute of mixed traffic above the
queue depth), and metrics that stay this server's own when another starts beside it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, encode, rgb_image
from tests.integration.server import Server, serving
from tests.integration.test_jobs import metric

pytestmark = pytest.mark.integration


def test_a_minute_of_mixed_traffic(bentoml_home: Path, tmp_path: Path, report) -> None:
    """Only designed statuses, /metrics equal to the client's counts per status, and the worker's memory at
    rest less than 50 MB larger at the end than after warm-up (before the fixes in threads.py, errors.py,
    inference.HeapTrimmer and MALLOC_ARENA_MAX it grew 55-350 MB in such a minute)."""
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks", "load_soak", "--duration", "60",
                          "--clients", "12", "--queue-depth", "8", "--json", str(out),
                          "--log", str(tmp_path / "server.log")], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["problems"] == [], run.stdout[-3000:]
    answers = result["client_answers"]
    # Every kind of answer the mix is built to draw, so the checks above had something to check.
    assert {"200", "413", "415", "422", "429", "503"} <= set(answers) and result["abandoned"] > 0, answers
    # The server counted every answer the client saw, and each abandoned request once (as what it answered
    # to nobody: 499 when its inference was stopped).
    served = result["server_requests_total"]
    assert all(served.get(status, 0) >= n for status, n in answers.items()), (served, answers)
    assert sum(served.values()) == sum(answers.values()) + result["abandoned"], (served, answers)
    assert run.returncode == 0, run.stdout[-3000:]
    lat, rss = result["latency_ms_accepted"], result["worker_rss_mb"]
    report(f"load: {result['requests']} requests in {result['duration_s']} s from {result['clients']} clients "
           f"(queue depth {result['queue_depth']}): {answers} + {result['abandoned']} abandoned; accepted p50 "
           f"{lat['p50']} ms, p99 {lat['p99']} ms; worker RSS at rest {rss['at_rest_after_warmup']} -> "
           f"{rss['at_rest_end']} MB")


def requests_total(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {key: metric(text, f'hndsr_requests_total{{endpoint="/infer",status="{key}"}}') for key in ("200", "422")}


def test_a_second_server_on_the_same_home_leaves_the_first_ones_metrics(bentoml_home: Path, tmp_path: Path) -> None:
    """`bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir as it starts: a second server used to
    wipe the first one's counters and show its own in their place."""
    ok = {"image": base64.b64encode(encode(rgb_image(32, 32))).decode(), "scale_factor": 2}
    with serving({"JOBS_DIR": str(tmp_path / "jobs1")}, tmp_path / "first.log") as first:
        assert httpx.post(f"{first.url}/infer", json=ok, timeout=60).status_code == 200
        assert httpx.post(f"{first.url}/infer", json={"image": "!!"}, timeout=60).status_code == 422
        counted = requests_total(first)
        assert counted == {"200": 1, "422": 1}
        with serving({"JOBS_DIR": str(tmp_path / "jobs2")}, tmp_path / "second.log") as second:
            assert requests_total(second) == {"200": 0, "422": 0}
            assert requests_total(first) == counted
        assert httpx.post(f"{first.url}/infer", json={"image": "!!"}, timeout=60).status_code == 422
        assert requests_total(first) == {"200": 1, "422": 2}
