"""Each admission guard alone, around a tiny ASGI app."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hndsr_model.weights import DEFAULT_VARIANT
from hndsr_service import metrics
from hndsr_service.client_ip import client_ip
from hndsr_service.guards import (
    ApiKeyMiddleware,
    BodyTimeoutMiddleware,
    ErrorEnvelopeMiddleware,
    PayloadSizeMiddleware,
    QueueDepthMiddleware,
    RateLimitMiddleware,
    RequestMetricsMiddleware,
)
from hndsr_service.settings import Settings, load_settings
from hndsr_service.state import ServiceState

KEY, OTHER_KEY = "k" * 24, "z" * 16


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


def serving_state() -> ServiceState:
    """A state whose model is loaded (a stand-in: these guards never run it)."""
    state = ServiceState(load_settings({}))
    state.model_ready({DEFAULT_VARIANT: object()})  # type: ignore[dict-item]
    return state


def test_queue_depth_sheds_before_reading_body() -> None:
    state = serving_state()
    client = app_with(QueueDepthMiddleware, settings=load_settings({"MAX_QUEUE_DEPTH": "2"}), state=state)
    assert client.post("/infer", content=b"x").status_code == 200
    with state.request_in_flight(), state.request_in_flight():  # two requests already in flight
        before = metrics.BACKPRESSURE_REJECTED._value.get()
        response = client.post("/infer", content=b"x")
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert response.json()["error"] == "overloaded"
        assert metrics.BACKPRESSURE_REJECTED._value.get() == before + 1
        assert client.get("/health").status_code == 200  # probes are never shed
    assert client.post("/infer", content=b"x").status_code == 200


def test_api_keys_guard_posts_only() -> None:
    client = app_with(ApiKeyMiddleware, settings=load_settings({"API_KEYS": f"{KEY},{OTHER_KEY}"}))
    missing = client.post("/infer", content=b"x")
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert client.post("/infer", content=b"x", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/infer", content=b"x", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.post("/infer", content=b"x", headers={"x-api-key": OTHER_KEY}).status_code == 200
    assert client.get("/health").status_code == 200
    open_client = app_with(ApiKeyMiddleware, settings=load_settings({}))
    assert open_client.post("/infer", content=b"x").status_code == 200


def test_draining_refuses_new_inference_but_not_probes() -> None:
    state = serving_state()
    client = app_with(QueueDepthMiddleware, settings=load_settings({}), state=state)
    state.drain(0, lambda: None)
    response = client.post("/infer", content=b"x")
    assert response.status_code == 503 and response.json()["error"] == "draining"
    assert client.get("/health").status_code == 200


def test_without_a_model_inference_is_refused_before_its_body() -> None:
    state = ServiceState(load_settings({}))
    client = app_with(QueueDepthMiddleware, settings=load_settings({}), state=state)
    state.model_failed("model not loaded: weights corrupt")
    response = client.post("/infer", content=b"x")
    assert response.status_code == 503 and response.headers["retry-after"] == "30"
    assert response.json()["error"] == "model_unavailable" and "weights corrupt" in response.json()["detail"]


def test_rate_limit_per_ip_with_retry_after() -> None:
    client = app_with(RateLimitMiddleware, settings=load_settings({"RATE_LIMIT_PER_HOUR": "3"}))
    assert [client.post("/infer").status_code for _ in range(3)] == [200, 200, 200]
    limited = client.post("/infer")
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert "from this address" in limited.json()["detail"]
    assert 3500 <= int(limited.headers["retry-after"]) <= 3600
    assert all(client.get("/health").status_code == 200 for _ in range(5))  # GETs are not limited


def peer_from_header(app: ASGIApp) -> ASGIApp:
    """Lets a test choose each request's socket peer (``x-test-peer``), as if it came from another address."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        peer = dict(scope.get("headers", [])).get(b"x-test-peer")
        if peer:
            scope = {**scope, "client": (peer.decode(), 1)}
        await app(scope, receive, send)

    return wrapped


def test_with_api_keys_the_limit_is_per_key_whatever_the_address() -> None:
    settings = load_settings({"API_KEYS": f"{KEY},{OTHER_KEY}=5", "RATE_LIMIT_PER_HOUR": "3"})
    inner = Starlette(routes=[Route("/infer", echo, methods=["POST"])])
    client = TestClient(peer_from_header(ApiKeyMiddleware(RateLimitMiddleware(inner, settings=settings),
                                                          settings=settings)))

    def statuses(key: str, n: int) -> list[int]:
        return [client.post("/infer", headers={"x-api-key": key, "x-test-peer": f"10.0.0.{i}"}).status_code
                for i in range(n)]

    assert statuses(KEY, 4) == [200, 200, 200, 429]  # a new address each time: the key is what is counted
    assert statuses(OTHER_KEY, 6) == [200] * 5 + [429]  # its own limit
    limited = client.post("/infer", headers={"x-api-key": KEY})
    assert "with this API key" in limited.json()["detail"] and KEY not in limited.text


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


Pace = Callable[[int], Awaitable[None]]  # waits before the client sends part number i


def call(app: ASGIApp, parts: list[bytes], pace: Pace) -> list[Message]:
    """One POST /infer whose body arrives as ``parts`` at ``pace``; returns what the app sent back."""
    sent: list[Message] = []
    index = 0

    async def receive() -> Message:
        nonlocal index
        if index == len(parts):
            await asyncio.sleep(3600)  # the client waits for its answer; it never disconnects
        await pace(index)
        index += 1
        return {"type": "http.request", "body": parts[index - 1], "more_body": index < len(parts)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/infer", "headers": [], "client": ("10.0.0.1", 1)}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return sent


def body_timeout(app: ASGIApp, seconds: float, progress_bytes: int) -> ASGIApp:
    settings = dataclasses.replace(Settings(), body_idle_timeout_s=seconds, body_progress_bytes=progress_bytes)
    return BodyTimeoutMiddleware(app, settings=settings)


async def reader(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, answers its size."""
    size, more = 0, True
    while more:
        message = await receive()
        size, more = size + len(message["body"]), message["more_body"]
    await JSONResponse({"received": size})(scope, receive, send)


def test_a_trickled_body_gets_408_and_the_connection_closed() -> None:
    started = time.monotonic()
    sent = call(body_timeout(reader, 0.3, progress_bytes=1024), [b"x"] * 100, lambda i: asyncio.sleep(0.02))
    elapsed = time.monotonic() - started
    start = sent[0]
    headers = dict(start["headers"])
    assert start["status"] == 408 and headers[b"x-error-code"] == b"body_timeout" and headers[b"connection"] == b"close"
    assert b"stalled" in sent[1]["body"] and len(sent) == 2  # the app was stopped: it answered nothing
    assert 0.3 <= elapsed < 1.5


def test_a_body_that_keeps_coming_is_not_idle() -> None:
    # 0.6 s in all, 0.1 s per part: longer than the timeout, but each part is progress.
    sent = call(body_timeout(reader, 0.3, progress_bytes=1024), [b"x" * 1024] * 6, lambda i: asyncio.sleep(0.1))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"received":6144}'


def test_the_apps_own_time_and_the_wait_after_the_body_do_not_count() -> None:
    async def slow_reader(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(3):
            await receive()
            await asyncio.sleep(0.2)  # the app's work between reads
        with_timeout = asyncio.wait_for(receive(), 0.5)  # listening for a disconnect once the body is complete
        try:
            await with_timeout
        except asyncio.TimeoutError:
            pass
        await JSONResponse({"ok": True})(scope, receive, send)

    sent = call(body_timeout(slow_reader, 0.3, progress_bytes=1024), [b"x", b"y", b"z"], lambda i: asyncio.sleep(0))
    assert sent[0]["status"] == 200


def test_error_envelope_turns_validation_400_into_422() -> None:
    response = app_with(ErrorEnvelopeMiddleware).post("/upscale")
    assert response.status_code == 422
    assert response.json() == {"error": "invalid_request",
                               "detail": "scale_factor: Input should be less than or equal to 8"}


def test_a_client_gone_while_its_body_was_read_is_a_499_not_a_500() -> None:
    """BentoML answers 500 when its body reader meets the disconnect; the load soak saw one such 500 counted."""

    async def bentoml_like(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"Internal Server Error"})

    messages = iter([{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}])
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/infer", "headers": []}
    asyncio.run(ErrorEnvelopeMiddleware(bentoml_like)(scope, receive, send))
    assert sent[0]["status"] == 499
    assert b"client_closed_request" in b"".join(m.get("body", b"") for m in sent[1:])


def test_request_metrics_bounded_labels() -> None:
    client = app_with(RequestMetricsMiddleware)
    for i in range(50):
        client.get(f"/random/{i}")
    samples = {s.labels["endpoint"] for s in metrics.REQUESTS.collect()[0].samples}
    assert not any(label.startswith("/random") for label in samples)
    assert "other" in samples
