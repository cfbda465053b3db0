"""Monitoring and deployment proven against the real thing: promtool/amtool, a real Prometheus scraping
the real service, the Compose file against the code's settings, and the Bento build/export/serve cycle."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from hndsr_service.local_server import BENTOML
from hndsr_service.settings import Settings, load_settings
from tests.helpers import ROOT, encode, free_port, rgb_image
from tests.integration.server import Server

pytestmark = pytest.mark.integration
MONITORING = ROOT / "monitoring"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs Debian's prometheus and prometheus-alertmanager)")
    return path


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_and_amtool_checks() -> None:
    promtool = tool("promtool")
    run(promtool, "check", "config", str(MONITORING / "prometheus.yml"))
    assert "SUCCESS: 8 rules found" in run(promtool, "check", "rules", str(MONITORING / "alerts.yml"))
    assert "SUCCESS" in run(promtool, "test", "rules", str(MONITORING / "tests" / "alerts_test.yml"))
    run(tool("amtool"), "check-config", str(MONITORING / "alertmanager.yml"))


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"]]


def test_alerts_follow_the_spec() -> None:
    rules = alert_rules()
    severities = [r["labels"]["severity"] for r in rules]
    assert severities.count("critical") == 4 and severities.count("warning") == 4
    for rule in rules:
        assert rule["for"] and rule["annotations"]["summary"] and rule["annotations"]["runbook"]
        assert 'job="hndsr-api"' in rule["expr"]
    assert yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"][0]["job_name"] == "hndsr-api"


def dashboard() -> dict:
    return json.loads((MONITORING / "grafana" / "dashboards" / "hndsr.json").read_text())


def test_dashboard_has_the_spec_panels() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard()["panels"])
    for needed in ("request rate", "error rate", "p50", "gpu memory", "active requests", "uptime", "rate limiting"):
        assert needed in titles
    assert all(p["targets"] for p in dashboard()["panels"])


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def default(value: str) -> str:
    """A Compose value with each ``${VAR:-default}`` replaced by its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_matches_the_code() -> None:
    services = compose()["services"]
    api = services["hndsr-api"]
    assert [default(p) for p in api["ports"]] == ["8000:8000"] and "/ready" in " ".join(api["healthcheck"]["test"])
    assert api["restart"] == "unless-stopped"
    assert float(api["stop_grace_period"].rstrip("s")) > Settings().drain_timeout_s
    assert "deploy" not in api  # a GPU reservation would stop CPU hosts: it lives in docker-compose.gpu.yml
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]["hndsr-api"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    defaults = {k: default(str(v)) for k, v in api["environment"].items() if not k.startswith("BENTOML_")}
    settings = load_settings(defaults)  # every variable is one the service reads, with the code's defaults
    assert settings == Settings(host="0.0.0.0")
    assert {s: default(services[s]["ports"][0]) for s in ("prometheus", "alertmanager", "grafana")} == {
        "prometheus": "9090:9090", "alertmanager": "9093:9093", "grafana": "3001:3000"}
    for name, svc in services.items():
        if name != "hndsr-api":  # the official images stay the pinned defaults (local builds via variables)
            assert re.search(r":v?\d+\.\d+\.\d+$", default(svc["image"])), f"{name} image is not pinned"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    provisioning = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/hndsr.yml").read_text())
    assert provisioning["providers"][0]["options"]["path"] in " ".join(services["grafana"]["volumes"])


@pytest.fixture(scope="module")
def live_stack(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """The real service plus a real Prometheus scraping it every second with the repo's rules."""
    prometheus = tool("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    server = Server({}, work / "server.log")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(MONITORING / "alerts.yml")]
    config.pop("alerting")
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom_url = f"http://127.0.0.1:{free_port()}"
    prom = subprocess.Popen([prometheus, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address={prom_url.removeprefix('http://')}"],
                            stdout=(work / "prometheus.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        server.wait_ready()
        yield server, prom_url
    finally:
        prom.terminate()
        prom.wait(timeout=20)
        server.stop()


def query(prom_url: str, expr: str) -> list:
    body = httpx.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def alert_signal(rule: dict) -> str:
    """The alert's expression without its threshold: the series it watches."""
    return re.sub(r"\s*(>|<|==|!=|>=|<=)\s*[\d.]+\s*$", "", rule["expr"].strip())


def queries_without_series(prom_url: str, exprs: list[str], timeout: float = 90.0) -> list[str]:
    """Poll until every expression returns a series, or the deadline passes; return those still empty.

    A ``rate()`` needs two scrapes of a series, and a labelled series such as ``hndsr_errors_total``
    only exists from its first increment: waiting on one signal (the inference rate) and then querying
    another raced Prometheus's scrape loop. Waiting on each expression itself cannot race. (The same
    symptom came from any other `bentoml serve` started on the test's BENTOML_HOME meanwhile: it emptied
    this server's metrics folder. Each server now has its own: test_load.py checks it.)
    """
    deadline = time.monotonic() + timeout
    pending = list(exprs)
    while pending and time.monotonic() < deadline:
        pending = [expr for expr in pending if not query(prom_url, expr)]
        if pending:
            time.sleep(1)
    return pending


def test_live_prometheus_evaluates_every_panel_and_alert(live_stack: tuple[Server, str]) -> None:
    server, prom_url = live_stack
    ok = {"image": base64.b64encode(encode(rgb_image(32, 32))).decode(), "scale_factor": 2}
    for _ in range(3):
        assert httpx.post(f"{server.url}/infer", json=ok, timeout=60).status_code == 200
        assert httpx.post(f"{server.url}/infer", json={"image": "!!"}, timeout=60).status_code == 422
    assert not queries_without_series(prom_url, ['up{job="hndsr-api"} == 1'])
    panels = [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]
    empty = queries_without_series(prom_url, panels)
    assert not empty, f"dashboard queries without series: {empty}"
    silent = queries_without_series(prom_url, [alert_signal(rule) for rule in alert_rules()])
    assert not silent, f"alert signals without series: {silent}"
    rules = httpx.get(f"{prom_url}/api/v1/rules").json()["data"]["groups"]
    assert {r["health"] for g in rules for r in g["rules"]} == {"ok"}


def bento_tag(build_output: str) -> str:
    """The tag scripts/build prints on a line of its own."""
    return re.findall(r"^hndsr:\w+$", build_output, re.MULTILINE)[-1]


def test_bento_build_export_and_serve_from_empty_home(bentoml_home: Path, tmp_path: Path) -> None:
    tag = bento_tag(run(sys.executable, str(ROOT / "scripts" / "build.py"), "--export", str(tmp_path / "hndsr.bento")))
    bento = next((bentoml_home / "bentos" / "hndsr").glob(tag.split(":")[1]))
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "ENTRYPOINT" in dockerfile and "FROM hndsr-base:bookworm" in dockerfile and "HEALTHCHECK" in dockerfile
    assert "torch==2.13.0" in (bento / "env" / "python" / "requirements.txt").read_text()
    cuda_tag = bento_tag(run(sys.executable, str(ROOT / "scripts" / "build.py"), "-f", "bentofile.cuda.yaml"))
    cuda_bento = bentoml_home / "bentos" / "hndsr" / cuda_tag.split(":")[1]
    assert "FROM nvidia/cuda:" in (cuda_bento / "env" / "docker" / "Dockerfile").read_text()
    model = yaml.safe_load(run(*BENTOML, "models", "get", "hndsr:latest"))
    assert set(model["metadata"]) >= {"version", "sha256", "quality_rsscn7_val_y_psnr_db"}
    empty_home = tmp_path / "empty_home"
    env = {"BENTOML_HOME": str(empty_home)}
    subprocess.run([*BENTOML, "import", str(tmp_path / "hndsr.bento")], check=True, cwd=tmp_path,
                   env={**os.environ, **env}, capture_output=True)
    server = Server(env, tmp_path / "bento-serve.log", target=tag, cwd=tmp_path)
    try:
        server.wait_ready()
        version = httpx.get(f"{server.url}/version").json()
        assert version["weights_sha256"] and version["model_version"]
        response = httpx.post(f"{server.url}/infer", json={"image": base64.b64encode(encode(rgb_image())).decode()},
                              timeout=60)
        assert response.status_code == 200
    finally:
        server.stop()
