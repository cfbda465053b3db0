"""The service's error envelope ``{"error": "<code>", "detail": "<message>"}``.

Every error response, whichever layer produces it, is built here and carries ``X-Error-Code`` so the
metrics middleware can count it by type without reading the body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import JSONResponse

ERROR_HEADER = "x-error-code"
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ServiceError(Exception):
    """A request that gets a designed error answer rather than a result."""

    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


def error_headers(code: str, retry_after: int | None = None) -> dict[str, str]:
    headers = {ERROR_HEADER: code}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return headers


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


def error_response(error: ServiceError, **extra: Any) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.detail, **extra),
        status_code=error.status,
        headers=error_headers(error.code, error.retry_after),
    )


async def send_error(send: Send, error: ServiceError) -> None:
    """Send a complete error response from pure-ASGI code (no Request object needed)."""
    body = json.dumps(error_body(error.code, error.detail)).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body)),
               **error_headers(error.code, error.retry_after)}
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
    await send({"type": "http.response.body", "body": body})
