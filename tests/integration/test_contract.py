"""The API contract: schemathesis, with every one of its checks, against the real server and its own /docs.json.

A seeded, bounded run for CI; the release run is the same test with more examples (README, "API contract"):

    HNDSR_CONTRACT_EXAMPLES=500 .venv/bin/python -m pytest tests/integration/test_contract.py -s

The server runs once open and once with ``API_KEYS`` (its document then declares the key schemes and 401,
and ``ignored_auth`` checks that every POST and DELETE really refuses a request without a key). The answers
that depend on what no schema can see (the image's content, a job's state) are allowed in
``schemathesis.toml``, each for the operations it applies to.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.integration.server import serving

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SEED = int(os.environ.get("HNDSR_CONTRACT_SEED", "20261126"))
EXAMPLES = int(os.environ.get("HNDSR_CONTRACT_EXAMPLES", "25"))  # per operation and phase
KEY = "contract-test-key-0123456789"
# Limits that would answer 429 or 503 to a fuzzer's steady stream, raised so every other answer is reachable.
ENV = {"RATE_LIMIT_PER_HOUR": "1000000", "MAX_QUEUED_JOBS": "1000"}


def run_schemathesis(url: str, reports: Path, headers: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    command = [str(SCHEMATHESIS), "--config-file", str(ROOT / "schemathesis.toml"), "run", f"{url}/docs.json",
               "--checks", "all", "--seed", str(SEED), "--max-examples", str(EXAMPLES), "--workers", "1",
               "--report", "json,ndjson", "--report-json-path", str(reports / "run.json"),
               "--report-ndjson-path", str(reports / "events.ndjson")]
    for header in headers:
        command += ["--header", header]
    return subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=ROOT)


def checks_run(events: Path) -> collections.Counter[str]:
    """How many times each check was evaluated, from the run's event stream."""
    counts: collections.Counter[str] = collections.Counter()
    with events.open() as stream:
        for line in stream:
            finished = json.loads(line).get("ScenarioFinished")
            for results in (finished or {}).get("recorder", {}).get("checks", {}).values():
                counts.update(result["name"] for result in results)
    return counts


@pytest.mark.parametrize("api_keys", [False, True], ids=["open", "api_keys"])
def test_schemathesis_finds_nothing(api_keys: bool, bentoml_home: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    env = {**ENV, "JOBS_DIR": str(tmp_path / "jobs"), **({"API_KEYS": KEY} if api_keys else {})}
    with serving(env, tmp_path / "server.log") as server:
        result = run_schemathesis(server.url, tmp_path, (f"Authorization: Bearer {KEY}",) if api_keys else ())
    summary = json.loads((tmp_path / "run.json").read_text())
    checks = checks_run(tmp_path / "events.ndjson")
    with capsys.disabled():
        print(f"\n[contract] schemathesis ({'API_KEYS' if api_keys else 'open'}, seed {SEED}, {EXAMPLES} examples): "
              f"{summary['operations']['tested']} operations, {summary['test_cases']['generated']} test cases, "
              f"{sum(checks.values())} check evaluations over {len(checks)} checks, "
              f"{summary['test_cases']['unique_failures']} failures, {summary['running_time']:.0f} s", flush=True)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert summary["operations"]["tested"] == summary["operations"]["total"] >= 13
    assert all(phase["status"] == "success" for phase in summary["phases"].values()), summary["phases"]
    assert len(checks) >= 14 and min(checks.values()) > 0, checks
