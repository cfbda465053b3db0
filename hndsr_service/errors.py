"""The service's error envelope ``{"error": "<code>", "detail": "<message>"}``.

Every error response, whichever layer produces it, is built here and carries ``X-Error-Code`` so the
metrics middleware can count it by type without reading the body; BentoML's own error answers are read
into it here too (:func:`foreign_error`).
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any, Concatenate, ParamSpec, TypeVar

from starlette.responses import JSONResponse

ERROR_HEADER = "x-error-code"
REQUEST_ID_HEADER = "x-request-id"
# The id of the request this task answers, set by guards.RequestIdMiddleware (tasks started for it inherit it):
# every error envelope carries it, whichever layer answers.
CURRENT_REQUEST_ID: ContextVar[str | None] = ContextVar("hndsr_request_id", default=None)
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
logger = logging.getLogger("bentoml.hndsr")


class ServiceError(Exception):
    """A request that gets a designed error answer rather than a result."""

    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


def choose_request_id(supplied: str | None) -> str:
    """The client's ``X-Request-ID`` when it is short printable ASCII, else a new one."""
    ok = supplied is not None and supplied.isascii() and supplied.isprintable() and 0 < len(supplied) <= 64
    return supplied if ok else uuid.uuid4().hex  # type: ignore[return-value]


def request_id(ctx: Any) -> str:
    """The request's id (``guards.RequestIdMiddleware`` has put it in the request's headers). It is set on the
    response at once, so every answer (result or error) carries it."""
    answered = ctx.response.headers.get(REQUEST_ID_HEADER)
    if answered:
        return answered
    ctx.response.headers[REQUEST_ID_HEADER] = chosen = choose_request_id(ctx.request.headers.get(REQUEST_ID_HEADER))
    return chosen


Service = TypeVar("Service")
P = ParamSpec("P")
R = TypeVar("R")


def api_errors(method: Callable[Concatenate[Service, P], Awaitable[R]]
               ) -> Callable[Concatenate[Service, P], Awaitable[R | JSONResponse]]:
    """Let a BentoML API method return only what it declares and raise :class:`ServiceError` for the rest.

    BentoML answers an exception from an API with a body of its own making, so the error is answered
    here: the envelope as the body, status and headers set through ``ctx.response`` (BentoML applies
    those to whatever the method returns). Anything unexpected is logged and answered 500 with the
    request id, never with the exception's text.
    """

    @functools.wraps(method)
    async def api(self: Service, *args: P.args, **kwargs: P.kwargs) -> R | JSONResponse:
        ctx = kwargs["ctx"]
        rid = request_id(ctx)
        # Each error is answered inside its except block: the exception (whose traceback holds the frames
        # of the stopped inference, tensors and all) must not outlive it in a local of this frame, which
        # its traceback also holds; that cycle kept every failed request's arrays until a full GC.
        try:
            return await method(self, *args, **kwargs)
        except ServiceError as exc:
            return answer_error(ctx, exc, rid)
        except Exception:
            logger.exception("request %s failed", rid)
            internal = ServiceError(500, "internal_error", f"the server failed to process the request (request id {rid})")
            return answer_error(ctx, internal, rid)

    return api


def answer_error(ctx: Any, error: ServiceError, rid: str) -> JSONResponse:
    """The JSON error envelope for an API function, status and headers set through ``ctx.response``."""
    ctx.response.status_code = error.status
    ctx.response.headers.update(error_headers(error.code, error.retry_after))
    return JSONResponse(error_body(error.code, error.detail, request_id=rid))


def error_headers(code: str, retry_after: int | None = None) -> dict[str, str]:
    headers = {ERROR_HEADER: code}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return headers


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The envelope, with the id of the request being answered (:data:`CURRENT_REQUEST_ID`)."""
    current = CURRENT_REQUEST_ID.get()
    return {"error": code, "detail": detail, **({"request_id": current} if current else {}), **extra}


def error_response(error: ServiceError, **extra: Any) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.detail, **extra),
        status_code=error.status,
        headers=error_headers(error.code, error.retry_after),
    )


async def send_error(send: Send, error: ServiceError, close: bool = False) -> None:
    """Send a complete error response from pure-ASGI code (no Request object needed); ``close`` asks the
    server to close the connection after it (for a request whose body will not be read to its end)."""
    body = json.dumps(error_body(error.code, error.detail)).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body)),
               **error_headers(error.code, error.retry_after), **({"connection": "close"} if close else {})}
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
    await send({"type": "http.response.body", "body": body})


def foreign_error(status: int, body: bytes) -> ServiceError:
    """Map a BentoML error response to the envelope; client mistakes become 422."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = body.decode(errors="replace")
    if isinstance(payload, list) and payload:  # BentoML wraps some errors in a one-element list
        payload = payload[0]
    code, detail = _split_code(_describe(payload))
    if status >= 500:
        return ServiceError(status, "internal_error", "the server failed to process the request")
    if status in (400, 422):
        return ServiceError(422, code, detail)
    return ServiceError(status, "http_error", detail)


# Codes our own parsing hooks put in front of a message BentoML then answers (``uploads.unprocessable``).
CODED = ("invalid_request", "invalid_image")


def coded_detail(code: str, detail: str) -> str:
    assert code in CODED
    return f"{code}: {detail}"


def _split_code(detail: str) -> tuple[str, str]:
    code, sep, rest = detail.partition(": ")
    return (code, rest) if sep and code in CODED else ("invalid_request", detail)


def _describe(payload: Any) -> str:
    if not isinstance(payload, dict):
        return str(payload)[:500]
    problems = payload.get("detail")
    if isinstance(problems, list):
        parts = [f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg', '')}" for item in problems
                 if isinstance(item, dict)]
        return "; ".join(parts)[:500] or str(payload.get("error", "invalid request"))
    return str(payload.get("error") or problems or "invalid request")[:500]
