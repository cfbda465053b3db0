"""Every designed status of the API through the in-process BentoML ASGI app (real model, real middleware)."""

from __future__ import annotations

import base64
import importlib
import io
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from starlette.testclient import TestClient

from hndsr_service.settings import get_settings
from tests.helpers import encode, rgb_image
from tests.unit.test_imaging import png_header_only

BASE_ENV = {"RATE_LIMIT_PER_HOUR": "1000", "MAX_PAYLOAD_MB": "1", "MAX_IMAGE_PIXELS": "250000",
            "MAX_OUTPUT_PIXELS": "4000000", "DEVICE": "cpu"}


@contextmanager
def service_client(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[TestClient]:
    """A fresh service module configured by ``env``, served in-process with its lifespan."""
    for key, value in {**BASE_ENV, **env}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    service = importlib.reload(sys.modules["service"]) if "service" in sys.modules else importlib.import_module("service")
    with TestClient(service.HNDSR.to_asgi(), raise_server_exceptions=False) as client:
        yield client
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def client(bentoml_home: Path) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as mp, service_client(mp) as c:
        yield c


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(response, status: int, code: str) -> dict:
    """The one envelope, whichever layer answered: its code in the body and ``X-Error-Code``, its request id in
    the body and ``X-Request-ID``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and isinstance(body["detail"], str) and body["detail"]
    assert response.headers["x-error-code"] == code and body["request_id"] == response.headers["x-request-id"]
    return body


def test_probes(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "healthy" and health["model_loaded"] and health["device"] == "cpu"
    assert client.get("/ready").json() == {"status": "ready"}
    assert client.get("/readyz").status_code == 200 and client.get("/healthz").status_code == 200
    version = client.get("/version").json()
    assert version["model"] == "hndsr" and len(version["weights_sha256"]) == 64 and version["bentoml"]
    assert version["engine"] == "onnxruntime"  # auto, on the CPU, with ONNX Runtime installed


def test_infer_contract(client: TestClient) -> None:
    image = rgb_image(24, 40)
    response = client.post("/infer", json={"image": "data:image/png;base64," + b64(encode(image)), "scale_factor": 3})
    assert response.status_code == 200
    body = response.json()
    assert (body["width"], body["height"], body["scale_factor"]) == (120, 72, 3)
    meta = body["metadata"]
    assert meta["input_size"] == [40, 24] and meta["output_size"] == [120, 72]
    assert meta["ddim_steps"] == 0 and meta["seed"] is None and meta["model"] == "hndsr" and meta["tiles"] == 1
    assert meta["device"] == "cpu" and meta["latency_ms"] > 0 and meta["request_id"]
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))))
    assert out.shape == (72, 120, 3)
    assert response.headers["x-request-id"] == meta["request_id"]


def test_model_variants(client: TestClient) -> None:
    """``model`` picks the shipped weights; every variant answers and says which it was."""
    variants = client.get("/version").json()["variants"]
    assert set(variants) == {"bicubic", "real"}
    assert all(len(v["weights_sha256"]) == 64 for v in variants.values())
    payload = {"image": b64(encode(rgb_image(24, 24))), "scale_factor": 2}
    answers = {}
    for variant in ("bicubic", "real"):
        meta = client.post("/infer", json={**payload, "model": variant}).json()["metadata"]
        assert meta["model_variant"] == variant and meta["model_version"] == variants[variant]["model_version"]
        answers[variant] = client.post("/upscale", files={"image": ("a.png", encode(rgb_image(24, 24)), "image/png")},
                                       data={"scale_factor": "2", "model": variant}).content
    assert client.post("/infer", json=payload).json()["metadata"]["model_variant"] == "bicubic"  # the default
    assert answers["bicubic"] != answers["real"]
    assert "model" in assert_error(client.post("/infer", json={**payload, "model": "sharp"}), 422,
                                   "invalid_request")["detail"]
    no_map = assert_error(client.post("/infer", json={**payload, "model": "real", "return_uncertainty": True}),
                          422, "invalid_request")
    assert "uncertainty head" in no_map["detail"]


def test_openapi_example_works(client: TestClient) -> None:
    spec = client.get("/docs.json").json()
    schema = spec["paths"]["/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    example = {name: prop["examples"][0] for name, prop in schema["properties"].items() if "examples" in prop}
    assert client.post("/infer", json=example).status_code == 200
    assert "multipart/form-data" in spec["paths"]["/upscale"]["post"]["requestBody"]["content"]


def test_infer_seeded_diffusion_is_reproducible(client: TestClient) -> None:
    payload = {"image": b64(encode(rgb_image(16, 16))), "scale_factor": 2, "ddim_steps": 2, "seed": 11,
               "return_metadata": False}
    first, second = client.post("/infer", json=payload).json(), client.post("/infer", json=payload).json()
    assert first["image"] == second["image"] and first["metadata"] is None


def test_upscale_multipart(client: TestClient) -> None:
    response = client.post("/upscale", files={"image": ("a.jpg", encode(rgb_image(20, 20), "JPEG"), "image/jpeg")},
                           data={"scale_factor": "2"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (40, 40)


def test_upscale_labels_octet_stream_parts_by_content(client: TestClient) -> None:
    tiff = io.BytesIO()
    tifffile.imwrite(tiff, rgb_image(16, 16))
    response = client.post("/upscale", files={"image": ("a.tif", tiff.getvalue(), "application/octet-stream")})
    assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (64, 64)
    wrong_type = client.post("/upscale", files={"image": ("a.png", encode(rgb_image()), "text/plain")})
    assert_error(wrong_type, 422, "invalid_request")


@pytest.mark.parametrize(("payload", "code"), [
    ({"image": "not base64!"}, "invalid_image"),
    ({"image": b64(b"plain text, not an image")}, "invalid_image"),
    ({"image": b64(encode(rgb_image(64, 64))[:200])}, "invalid_image"),
    ({"image": "aGk=", "scale_factor": 9}, "invalid_request"),
    ({"image": "aGk=", "scale_factor": 1}, "invalid_request"),
    ({"image": "aGk=", "ddim_steps": -1}, "invalid_request"),
    ({"image": "aGk=", "ddim_steps": 51}, "invalid_request"),
    ({"image": "aGk=", "scale_factor": "four"}, "invalid_request"),
    ({"image": 42}, "invalid_request"),
    ({"scale_factor": 2}, "invalid_request"),
])
def test_infer_client_mistakes_are_422(client: TestClient, payload: dict, code: str) -> None:
    assert_error(client.post("/infer", json=payload), 422, code)


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post("/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_request")


def test_upscale_client_mistakes(client: TestClient) -> None:
    garbage = client.post("/upscale", files={"image": ("a.png", b"garbage", "image/png")})
    assert_error(garbage, 422, "invalid_image")
    url_text = client.post("/upscale", data={"image": "http://127.0.0.1:1/secret"},
                           files={"other": ("x", b"x", "text/plain")})
    assert_error(url_text, 422, "invalid_request")
    broken = client.post("/upscale", content=b"--xx\r\nbroken", headers={"content-type": "multipart/form-data; boundary=xx"})
    assert broken.status_code == 422
    as_json = client.post("/upscale", json={"image": "/etc/passwd"})
    assert as_json.status_code in (415, 422) and as_json.json()["error"] in ("unsupported_media_type", "invalid_request")


def test_size_guards(client: TestClient) -> None:
    assert_error(client.post("/infer", content=b"x" * (2 * 2**20), headers={"content-type": "application/json"}),
                 413, "payload_too_large")
    bomb = client.post("/infer", json={"image": b64(png_header_only(20_000, 20_000))})
    assert_error(bomb, 413, "image_too_large")
    assert_error(client.post("/infer", json={"image": b64(encode(rgb_image(400, 400))), "scale_factor": 8}),
                 413, "output_too_large")


def test_metrics_count_responses(client: TestClient) -> None:
    client.post("/infer", json={"image": "!!"})
    text = client.get("/metrics").text
    assert 'hndsr_requests_total{endpoint="/infer",status="422"}' in text
    assert 'hndsr_errors_total{error_type="invalid_image"}' in text
    for name in ("hndsr_inference_seconds_bucket", "hndsr_active_requests", "hndsr_gpu_memory_used_bytes",
                 "hndsr_rate_limited_total", "hndsr_backpressure_rejected_total", "hndsr_uptime_seconds"):
        assert name in text


@pytest.mark.parametrize(("failure", "status", "code"), [
    (torch.cuda.OutOfMemoryError("CUDA out of memory"), 503, "gpu_out_of_memory"),
    (RuntimeError("boom"), 500, "internal_error"),
])
def test_model_failures_keep_the_service_up(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                            failure: Exception, status: int, code: str) -> None:
    pipeline = sys.modules["service"].state.pipeline

    def fail(*args, **kwargs):
        raise failure

    payload = {"image": b64(encode(rgb_image(16, 16))), "scale_factor": 2}
    with monkeypatch.context() as mp:
        mp.setattr(pipeline, "upscale", fail)
        body = assert_error(client.post("/infer", json=payload, headers={"x-request-id": "req-42"}), status, code)
    assert body["request_id"] == "req-42"
    assert client.post("/infer", json=payload).status_code == 200


def test_rate_limit_429(bentoml_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with service_client(monkeypatch, RATE_LIMIT_PER_HOUR="2") as c:
        statuses = [c.post("/infer", json={"image": "!!"}).status_code for _ in range(3)]
        assert statuses[:2] == [422, 422]
        limited = c.post("/infer", json={"image": "!!"})
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) > 0
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize("batch_wait_ms", ["0", "5"])  # without and with the micro-batcher
def test_inference_timeout_stops_the_model(bentoml_home: Path, monkeypatch: pytest.MonkeyPatch,
                                           batch_wait_ms: str) -> None:
    with service_client(monkeypatch, REQUEST_TIMEOUT_S="0.05", TILE_SIZE="32", TILE_OVERLAP="4",
                        BATCH_WAIT_MS=batch_wait_ms, ADMIT_BY_SPEED="false") as c:  # the work starts; the deadline stops it
        response = c.post("/infer", json={"image": b64(encode(rgb_image(256, 256))), "scale_factor": 4})
        assert_error(response, 504, "inference_timeout")
        assert 'hndsr_inference_cancelled_total{reason="timeout"}' in c.get("/metrics").text


def test_corrupt_weights_mean_not_ready(bentoml_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.unit.test_model import copy_weights

    weights = copy_weights(tmp_path)
    weights.write_bytes(weights.read_bytes()[:-100])
    with service_client(monkeypatch, WEIGHTS_PATH=str(weights)) as c:
        ready = c.get("/ready")
        assert ready.status_code == 503 and "retry-after" in ready.headers and "checksum" in ready.json()["reason"]
        health = c.get("/health")
        assert health.status_code == 503 and "checksum" in health.json()["reason"]
        assert c.get("/readyz").status_code == 503
        assert_error(c.post("/infer", json={"image": b64(encode(rgb_image()))}), 503, "model_unavailable")



def test_the_stored_model_holds_every_variant(bentoml_home: Path) -> None:
    import bentoml

    from hndsr_model.weights import VARIANT_FILES
    from hndsr_service.model_store import register

    stored = bentoml.models.get("hndsr:latest")
    assert set(stored.info.metadata["variants"]) == set(VARIANT_FILES)
    for name in VARIANT_FILES.values():
        assert Path(stored.path_of(name)).is_file() and Path(stored.path_of(name)).with_suffix(".json").is_file()
    assert register() == str(stored.tag)  # the same weights again: no new model


def test_weights_path_serves_one_variant(bentoml_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hndsr_model.weights import DEFAULT_WEIGHTS

    with service_client(monkeypatch, WEIGHTS_PATH=str(DEFAULT_WEIGHTS)) as c:
        assert set(c.get("/version").json()["variants"]) == {"bicubic"}
        payload = {"image": b64(encode(rgb_image(16, 16))), "scale_factor": 2, "model": "real"}
        assert "not served here" in assert_error(c.post("/infer", json=payload), 422, "invalid_request")["detail"]


def test_api_key_required_when_configured(bentoml_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "team-key-0123456789"
    with service_client(monkeypatch, API_KEYS=key) as c:
        payload = {"image": b64(encode(rgb_image(16, 16))), "scale_factor": 2}
        assert_error(c.post("/infer", json=payload), 401, "unauthorized")
        assert c.post("/infer", json=payload, headers={"authorization": f"Bearer {key}"}).status_code == 200
        assert c.get("/ready").status_code == 200 and c.get("/metrics").status_code == 200
        spec = c.get("/docs.json").json()  # the document says so
        assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        for path, method in (("/infer", "post"), ("/jobs", "post"), ("/jobs/{job_id}", "delete")):
            operation = spec["paths"][path][method]
            assert "401" in operation["responses"] and operation["security"] == [{"bearer": []}, {"apiKey": []}]
        assert "security" not in spec["paths"]["/jobs/{job_id}"]["get"]


# -- the contract: what /docs.json promises is what the routes do (each case below was found by schemathesis)


def test_openapi_document_lists_every_answer(client: TestClient) -> None:
    spec = client.get("/docs.json").json()
    assert spec["openapi"] == "3.1.0"
    for path in ("/infer", "/upscale", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/result", "/health", "/ready",
                 "/version", "/metrics", "/livez", "/readyz"):
        assert path in spec["paths"], path
    infer, upscale = spec["paths"]["/infer"]["post"], spec["paths"]["/upscale"]["post"]
    assert set(infer["responses"]) == {"200", "400", "408", "413", "422", "429", "500", "503", "504"}
    assert set(upscale["responses"]) == set(infer["responses"]) | {"406", "415"}
    assert set(upscale["responses"]["200"]["content"]) == {"image/png", "image/jpeg", "image/webp", "image/tiff"}
    assert "media_type" in spec["components"]["schemas"]["InferResponse"]["required"]
    for status in ("413", "422", "503"):
        assert infer["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"}
    request = infer["requestBody"]["content"]["application/json"]["schema"]
    assert request["additionalProperties"] is False and request["required"] == ["image"]
    assert {"type": "null"} in request["properties"]["seed"]["anyOf"]  # null is accepted, so documented
    assert "securitySchemes" not in spec["components"] and "401" not in infer["responses"]
    forms = [spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
             for path in ("/upscale", "/jobs")]
    for body in (request, *forms):  # the uncertainty map's fields, bounded as the pipeline's UNCERTAINTY_SAMPLES
        samples = body["properties"]["uncertainty_samples"]
        assert (samples["type"], samples["minimum"], samples["maximum"], samples["default"]) == ("integer", 2, 16, 8)
        assert body["properties"]["return_uncertainty"] | {"description": ""} == {
            "type": "boolean", "default": False, "examples": [False], "title": "Return Uncertainty", "description": ""}
    response = spec["components"]["schemas"]["InferResponse"]
    assert "uncertainty" in response["properties"] and "uncertainty" not in response["required"]


def test_api_answers_are_what_they_declare(client: TestClient) -> None:
    upscaled = client.post("/upscale", files={"image": ("a.png", encode(rgb_image(8, 8)), "image/png")},
                           data={"scale_factor": "2"}, headers={"x-request-id": "req-7"})
    assert upscaled.status_code == 200 and upscaled.headers["content-type"] == "image/png"
    assert upscaled.headers["x-request-id"] == "req-7" and upscaled.headers["x-hndsr-seed"] == "None"
    assert upscaled.headers["content-disposition"] == 'inline; filename="hndsr-x2.png"'
    inferred = client.post("/infer", json={"image": b64(encode(rgb_image(8, 8))), "scale_factor": 2.0})
    assert inferred.status_code == 200, inferred.text  # 2.0 is an integer, as in JSON Schema
    assert set(inferred.json()) == {"image", "media_type", "width", "height", "scale_factor", "metadata"}


def test_the_projection_is_on_unless_asked_off_and_every_answer_says_which(client: TestClient) -> None:
    image = encode(rgb_image(24, 32, seed=3))
    on, off = (client.post("/upscale", files={"image": ("a.png", image, "image/png")}, data=fields)
               for fields in ({"scale_factor": "3"}, {"scale_factor": "3", "consistency": "false"}))
    assert (on.headers["x-hndsr-consistency"], off.headers["x-hndsr-consistency"]) == ("true", "false")
    assert on.content != off.content
    metadata = client.post("/infer", json={"image": b64(image), "consistency": False}).json()["metadata"]
    assert metadata["consistency"] is False
    refused = client.post("/infer", json={"image": b64(image), "consistency": "yes"})
    assert refused.status_code == 422 and "consistency" in refused.text


@pytest.mark.parametrize("path", ["/infer", "/upscale", "/jobs"])
def test_unknown_fields_are_named(client: TestClient, path: str) -> None:
    image = encode(rgb_image(8, 8))
    if path == "/infer":
        response = client.post(path, json={"image": b64(image), "scale": 2})
    else:
        response = client.post(path, files={"image": ("a.png", image, "image/png")}, data={"scale": "2"})
    assert "scale" in assert_error(response, 422, "invalid_request")["detail"]


@pytest.mark.parametrize("field", [{"scale_factor": "4"}, {"scale_factor": True}, {"ddim_steps": 1.5},
                                   {"seed": "7"}, {"return_metadata": 1}, {"return_metadata": "yes"},
                                   {"output_format": "PNG"}, {"bands": True}, {"bands": 0},
                                   {"return_uncertainty": 1}, {"return_uncertainty": "true"},
                                   {"uncertainty_samples": "8"}, {"uncertainty_samples": 8.5}])
def test_no_type_coercion(client: TestClient, field: dict) -> None:
    response = client.post("/infer", json={"image": b64(encode(rgb_image(8, 8))), **field})
    assert next(iter(field)) in assert_error(response, 422, "invalid_request")["detail"]


@pytest.mark.parametrize("path", ["/infer", "/upscale", "/jobs"])
def test_multipart_without_boundary_is_422(client: TestClient, path: str) -> None:
    response = client.post(path, content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert "boundary" in assert_error(response, 422, "invalid_request")["detail"]


@pytest.mark.parametrize("path", ["/upscale", "/jobs"])
def test_a_field_given_twice_is_422(client: TestClient, path: str) -> None:
    """Which of two values a parser keeps is its accident: a doubled field is a malformed form on every route."""
    image = ("a.png", encode(rgb_image(8, 8)), "image/png")
    fields = {"return_uncertainty": ["true", "false"], "scale_factor": "2"}
    response = client.post(path, files={"image": image}, data=fields)
    detail = assert_error(response, 422, "invalid_request")["detail"]
    assert detail == "malformed form: field return_uncertainty given more than once"


def test_decoder_errors_are_in_our_words(client: TestClient) -> None:
    bomb = assert_error(client.post("/infer", json={"image": b64(png_header_only(50_000, 50_000))}), 413,
                        "image_too_large")
    assert bomb["detail"] == "image is 50000x50000 = 2,500,000,000 pixels; the limit is 250,000"  # its real size
    broken_tiff = b"II*\x00" + b"\xff" * 64
    for response in (client.post("/infer", json={"image": b64(broken_tiff), "bands": "1"}),
                     client.post("/jobs", files={"image": ("a.tif", broken_tiff, "image/tiff")})):
        detail = assert_error(response, 422, "invalid_image")["detail"]
        assert "/vsimem" not in detail and "jobs/" not in detail and "not a raster" in detail
    assert_error(client.post("/infer", json={"image": "", "bands": "1"}), 422, "invalid_image")


def test_job_routes_answer_any_id_in_the_envelope(client: TestClient) -> None:
    assert_error(client.get("/jobs/a/b"), 404, "job_not_found")
    assert_error(client.get("/jobs/a%2Fb/result"), 404, "job_not_found")
    refused = client.request("PATCH", "/jobs/" + "0" * 32)
    assert refused.status_code == 405 and {"DELETE", "GET"} <= set(refused.headers["allow"].split(", "))
    line_break = client.get("/jobs/0%0A1")  # BentoML's router keeps it from the job routes: its own 404, documented
    assert line_break.status_code == 404 and line_break.headers["content-type"].startswith("text/plain")


def test_every_error_carries_the_request_id_the_client_gave(client: TestClient) -> None:
    given = {"x-request-id": "trace-0042"}
    for response in (client.post("/infer", json={"image": b64(encode(rgb_image(8, 8))), "scale_factor": 9},
                                 headers=given),  # BentoML's validation, rewritten
                     client.post("/upscale", content=b"{}", headers={**given, "content-type": "application/json"}),
                     client.get("/jobs/" + "0" * 32, headers=given)):
        assert response.status_code >= 400 and response.json()["request_id"] == "trace-0042"
        assert response.headers["x-request-id"] == "trace-0042"
    assert client.get("/health", headers=given).headers["x-request-id"] == "trace-0042"
    unusable = client.get("/jobs/" + "0" * 32, headers={"x-request-id": "x" * 65})
    assert len(assert_error(unusable, 404, "job_not_found")["request_id"]) == 32  # a new one instead


@pytest.mark.parametrize("path", ["/upscale", "/jobs"])
def test_an_upload_route_without_multipart_is_415(client: TestClient, path: str) -> None:
    for headers in ({"content-type": "application/json"}, {}):
        detail = assert_error(client.post(path, content=b'{"image": "x"}', headers=headers), 415,
                              "unsupported_media_type")["detail"]
        assert "multipart/form-data" in detail


def test_a_valid_job_id_that_is_unknown_is_not_told_its_form(client: TestClient) -> None:
    assert "32 hex" not in assert_error(client.get("/jobs/" + "0" * 32), 404, "job_not_found")["detail"]
    assert "32 hex" in assert_error(client.get("/jobs/nope"), 404, "job_not_found")["detail"]


def test_an_empty_upload_is_said_to_be_empty(client: TestClient) -> None:
    for media_type in ("image/png", "application/octet-stream"):
        response = client.post("/upscale", files={"image": ("a.png", b"", media_type)})
        assert "empty" in assert_error(response, 422, "invalid_image")["detail"]


def test_a_one_band_raster_gets_a_grey_quicklook(client: TestClient) -> None:
    raster = io.BytesIO()
    tifffile.imwrite(raster, (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 50))
    response = client.post("/upscale", files={"image": ("pan.tif", raster.getvalue(), "image/tiff")},
                           data={"scale_factor": "2", "output_format": "png"})
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as png:
        assert png.mode == "L" and png.size == (64, 48)


def test_work_past_the_deadline_at_the_measured_speed_is_refused_at_once(monkeypatch: pytest.MonkeyPatch,
                                                                          bentoml_home: Path) -> None:
    """A deliberately slow configuration (small tiles, a 2 s deadline): the large request is refused before any
    work, with the estimate; a small one is answered, and the estimate is on /version."""
    with service_client(monkeypatch, REQUEST_TIMEOUT_S="2", TILE_SIZE="32", TILE_OVERLAP="8") as slow:
        speed = slow.get("/version").json()["speed"]
        assert set(speed) == {"x4"} and speed["x4"] > 0  # from the warm-up
        big = {"image": b64(encode(rgb_image(240, 240))), "scale_factor": 8, "ddim_steps": 50}
        started = time.monotonic()
        refused = assert_error(slow.post("/infer", json=big), 413, "too_slow_for_sync")
        assert time.monotonic() - started < 2 and "POST /jobs" in refused["detail"]
        assert re.search(r"about \d+ s", refused["detail"])
        assert slow.post("/infer", json={"image": b64(encode(rgb_image(16, 16))), "scale_factor": 2}).status_code == 200
        assert set(slow.get("/version").json()["speed"]) == {"x4"}  # not a whole tile: mostly a call's fixed cost
        assert slow.post("/infer", json={"image": b64(encode(rgb_image(64, 64))), "scale_factor": 2}).status_code == 200
        assert set(slow.get("/version").json()["speed"]) == {"x2", "x4"}  # learnt from the answer
