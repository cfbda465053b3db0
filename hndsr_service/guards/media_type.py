"""415 for an upload route's POST that is not multipart/form-data, before its body is read (BentoML would read
it and answer that the form lacks its image)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ServiceError, send_error

UPLOAD_PATHS = {"/upscale": "the image", "/jobs": "the raster"}


class MediaTypeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        what = UPLOAD_PATHS.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        sent = Headers(scope=scope).get("content-type", "") if what else ""
        if what is None or sent.lower().startswith("multipart/form-data"):
            await self.app(scope, receive, send)
            return
        await send_error(send, ServiceError(415, "unsupported_media_type", f"send {what} as multipart/form-data "
                                            f"(field image), not {sent.split(';')[0] or 'a body without a type'}"))
