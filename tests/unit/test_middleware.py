"""Each admission guard alone, around a tiny ASGI app."""

from __future__ import annotations

import tracemalloc

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from hndsr_service import metrics
from hndsr_service.middleware import (
    ApiKeyMiddleware,
    ErrorEnvelopeMiddleware,
    InFlight,
    PayloadSizeMiddleware,
    QueueDepthMiddleware,
    RateLimitMiddleware,
    RequestMetricsMiddleware,
    SlidingWindowLimiter,
    client_ip,
)
from hndsr_service.settings import load_settings


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"received": len(body)})


async def bentoml_like_400(request: Request) -> JSONResponse:
    return JSONResponse({"error": "1 validation error for Input",
                         "detail": [{"loc": ["scale_factor"], "msg": "Input should be less than or equal to 8"}]},
                        status_code=400)


def app_with(middleware, **options) -> TestClient:
    inner = Starlette(routes=[Route("/infer", echo, methods=["POST"]), Route("/upscale", bentoml_like_400,
                                                                            methods=["POST"]),
                              Route("/health", echo)])
    return TestClient(middleware(inner, **options))


def test_queue_depth_sheds_before_reading_body() -> None:
    in_flight = InFlight()
    client = app_with(QueueDepthMiddleware, settings=load_settings({"MAX_QUEUE_DEPTH": "2"}), in_flight=in_flight)
    assert client.post("/infer", content=b"x").status_code == 200
    in_flight.count = 2  # two requests already in flight
    before = metrics.BACKPRESSURE_REJECTED._value.get()
    response = client.post("/infer", content=b"x")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"] == "overloaded"
    assert metrics.BACKPRESSURE_REJECTED._value.get() == before + 1
    assert client.get("/health").status_code == 200  # probes are never shed


def test_api_keys_guard_posts_only() -> None:
    key = "k" * 24
    client = app_with(ApiKeyMiddleware, settings=load_settings({"API_KEYS": f"{key},{'z' * 16}"}))
    missing = client.post("/infer", content=b"x")
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert client.post("/infer", content=b"x", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/infer", content=b"x", headers={"authorization": f"Bearer {key}"}).status_code == 200
    assert client.post("/infer", content=b"x", headers={"x-api-key": "z" * 16}).status_code == 200
    assert client.get("/health").status_code == 200
    open_client = app_with(ApiKeyMiddleware, settings=load_settings({}))
    assert open_client.post("/infer", content=b"x").status_code == 200


def test_draining_refuses_new_inference_but_not_probes() -> None:
    in_flight = InFlight()
    client = app_with(QueueDepthMiddleware, settings=load_settings({}), in_flight=in_flight)
    in_flight.draining = True
    response = client.post("/infer", content=b"x")
    assert response.status_code == 503 and response.json()["error"] == "draining"
    assert client.get("/health").status_code == 200


def test_rate_limit_per_ip_with_retry_after() -> None:
    client = app_with(RateLimitMiddleware, settings=load_settings({"RATE_LIMIT_PER_HOUR": "3"}))
    assert [client.post("/infer").status_code for _ in range(3)] == [200, 200, 200]
    limited = client.post("/infer")
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert 3500 <= int(limited.headers["retry-after"]) <= 3600
    assert all(client.get("/health").status_code == 200 for _ in range(5))  # GETs are not limited


def test_rolling_window_frees_oldest_hit() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(2, window_s=100, clock=lambda: now[0])
    assert limiter.hit("a") is None
    now[0] = 40
    assert limiter.hit("a") is None
    assert limiter.hit("a") == 60
    now[0] = 101
    assert limiter.hit("a") is None  # the hit at t=0 left the window
    assert limiter.hit("b") is None  # keys are independent


def test_limiter_memory_is_bounded_and_stale_keys_purged() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(100, window_s=3600, max_keys=10_000, clock=lambda: now[0])
    tracemalloc.start()
    for i in range(20_000):
        limiter.hit(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(limiter.hits) == 10_000
    assert current < 4 * 2**20, f"{current / 2**20:.1f} MiB for 10,000 clients"
    now[0] = 4000
    limiter.hit("new")
    assert list(limiter.hits) == ["new"]


def test_client_ip_honours_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = load_settings({"TRUSTED_PROXIES": "10.0.0.0/8"}).trusted_proxies
    scope = {"client": ("10.0.0.5", 1), "headers": [(b"x-forwarded-for", b"1.2.3.4, 10.0.0.9")]}
    assert client_ip(scope, trusted) == "1.2.3.4"
    scope["client"] = ("8.8.8.8", 1)
    assert client_ip(scope, trusted) == "8.8.8.8"
    assert client_ip({"client": ("10.0.0.5", 1), "headers": []}, trusted) == "10.0.0.5"


def test_payload_limit_by_content_length() -> None:
    client = app_with(PayloadSizeMiddleware, settings=load_settings({"MAX_PAYLOAD_MB": "0.001"}))
    assert client.post("/infer", content=b"x" * 1000).json() == {"received": 1000}
    response = client.post("/infer", content=b"x" * 2000)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


def test_payload_limit_while_streaming_without_content_length() -> None:
    client = app_with(PayloadSizeMiddleware, settings=load_settings({"MAX_PAYLOAD_MB": "0.001"}))

    def chunks():
        for _ in range(10):
            yield b"x" * 500

    response = client.post("/infer", content=chunks())
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    small = client.post("/infer", content=iter([b"x" * 100, b"y" * 100]))
    assert small.json() == {"received": 200}


def test_error_envelope_turns_validation_400_into_422() -> None:
    response = app_with(ErrorEnvelopeMiddleware).post("/upscale")
    assert response.status_code == 422
    assert response.json() == {"error": "invalid_request",
                               "detail": "scale_factor: Input should be less than or equal to 8"}


def test_request_metrics_bounded_labels() -> None:
    client = app_with(RequestMetricsMiddleware)
    for i in range(50):
        client.get(f"/random/{i}")
    samples = {s.labels["endpoint"] for s in metrics.REQUESTS.collect()[0].samples}
    assert not any(label.startswith("/random") for label in samples)
    assert "other" in samples
