"""deploy/kubernetes validated offline against the Kubernetes API schemas (kubernetes-validate), and held to
the code: the probes, port, environment, drain timing and autoscaling metric must be the service's own."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from hndsr_service import metrics
from hndsr_service.settings import Settings, load_settings
from tests.helpers import ROOT

MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"


def documents() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(MANIFESTS.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> dict:
    return next(doc for _, doc in documents() if doc["kind"] == kind and doc["metadata"]["name"] == name)


@pytest.mark.parametrize("path, doc", documents(), ids=lambda v: v.name if isinstance(v, Path) else v["kind"])
def test_manifest_is_valid_kubernetes(path: Path, doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_applied_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    applied = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", "prometheus-adapter-rule.yaml"}
    assert set(kustomization["resources"]) == applied


def api_container() -> tuple[dict, dict]:
    pod = find("Deployment", "hndsr-api")["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "api")


def test_api_deployment_agrees_with_the_settings() -> None:
    pod, container = api_container()
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = load_settings({k: v for k, v in env.items() if not k.startswith("BENTOML_")})
    assert settings.device == "cuda" and settings.host == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "http"] == [settings.port]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # preStop pause + drain must end before the kubelet's SIGKILL
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = container["args"][container["args"].index("--timeout-graceful-shutdown") + 1]
    assert float(graceful) == settings.drain_timeout_s
    assert pod["terminationGracePeriodSeconds"] > pause + settings.drain_timeout_s
    # the image's user (BentoML's bentoml user, uid 1034) is non-root
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1034
    for name in env:
        assert name.startswith("BENTOML_") or name.lower() in Settings.__dataclass_fields__, name


def test_pods_share_jobs_through_a_database_and_storage_from_a_secret() -> None:
    pod, container = api_container()
    env = {e["name"]: e for e in container["env"]}
    for name in ("JOBS_DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "hndsr-jobs", name
    assert load_settings({"JOBS_STORAGE_URL": env["JOBS_STORAGE_URL"]["value"]}).jobs_storage_url
    assert env["REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "scratch")
    assert "emptyDir" in scratch and env["JOBS_DIR"]["value"].startswith(mount["mountPath"] + "/")
    assert container["resources"]["limits"]["ephemeral-storage"] == scratch["emptyDir"]["sizeLimit"]
    assert container["image"].endswith("-cuda")  # the CUDA image's own tag; the CPU image is hndsr:latest


def test_the_autoscaler_can_reach_its_target_on_every_pod() -> None:
    """The queue depth is shared by every pod (Redis): below max pods x target, the last pods never reach it."""
    _, container = api_container()
    depth = int(next(e["value"] for e in container["env"] if e["name"] == "MAX_QUEUE_DEPTH"))
    hpa = find("HorizontalPodAutoscaler", "hndsr-api")["spec"]
    target = float(hpa["metrics"][0]["pods"]["target"]["averageValue"])
    assert hpa["maxReplicas"] * target <= depth


def test_redis_url_points_at_the_redis_service() -> None:
    _, container = api_container()
    url = urlparse(next(e["value"] for e in container["env"] if e["name"] == "REDIS_URL"))
    service = find("Service", url.hostname)
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    redis = find("Deployment", url.hostname)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= redis.items()


def test_service_pdb_and_autoscaler_select_the_api_pods() -> None:
    labels = find("Deployment", "hndsr-api")["spec"]["template"]["metadata"]["labels"]
    service = find("Service", "hndsr-api")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert find("PodDisruptionBudget", "hndsr-api")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = find("HorizontalPodAutoscaler", "hndsr-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hndsr-api"}
    assert hpa["minReplicas"] >= 2
    metric = hpa["metrics"][0]["pods"]["metric"]["name"]
    assert metric == metrics.ACTIVE_REQUESTS._name
    adapter = yaml.safe_load(find("ConfigMap", "prometheus-adapter-hndsr")["data"]["config.yaml"])
    assert adapter["rules"][0]["name"]["as"] == metric and metric in adapter["rules"][0]["seriesQuery"]


def test_the_pod_scrape_configuration_finds_the_api_pods() -> None:
    """Debian's promtool is built without Kubernetes discovery, so the relabelling is checked here: it keeps the
    API pods by their labels and annotation, and scrapes the port and path the pods announce."""
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus-kubernetes.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "hndsr-api")
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    template = find("Deployment", "hndsr-api")["spec"]["template"]["metadata"]
    _, container = api_container()
    keep = [rule for rule in job["relabel_configs"] if rule.get("action") == "keep"]
    label_rule = next(r for r in keep if "label" in r["source_labels"][0])
    meta = {"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key): value
            for key, value in template["labels"].items()}  # how Prometheus names a pod's labels
    assert ";".join(meta[name] for name in label_rule["source_labels"]) == label_rule["regex"]
    annotations = template["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == next(p["containerPort"] for p in container["ports"])
