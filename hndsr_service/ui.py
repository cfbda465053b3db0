"""The web page at ``GET /ui``: static files from ``static/`` plus the few limits the page needs to know.

The page (``static/index.html``, ``app.js``, ``style.css`` and the vendored TIFF decoder) only calls the
service's public APIs; ``/ui/config.json`` tells it the synchronous limits (so it can send a large raster to
``/jobs`` up front) and whether POSTs need an API key.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .settings import Settings

STATIC = Path(__file__).with_name("static")
# Only the service itself: no CDN, no inline script. blob: carries decoded TIFFs and results; WebAssembly is
# the vendored decoder's zstd codec.
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def ui_routes(settings: Settings) -> list[BaseRoute]:
    async def page(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                            headers={"content-security-policy": CSP, "cache-control": "no-cache"})

    async def config(_: Request) -> Response:
        return JSONResponse({
            "max_image_pixels": settings.max_image_pixels,
            "max_output_pixels": settings.max_output_pixels,
            "max_payload_bytes": settings.max_payload_bytes,
            "max_job_upload_bytes": settings.max_job_upload_bytes,
            "api_key_required": bool(settings.api_keys),
        })

    return [Route("/ui", page), Route("/ui/", page), Route("/ui/config.json", config),
            Mount("/ui", StaticFiles(directory=STATIC), name="ui")]
