"""The web page at ``GET /ui``: static files from ``static/`` plus the few limits the page needs to know.

The page (``static/index.html``, ``app.js``, ``map.js``, ``style.css`` and the vendored TIFF decoder, OpenLayers
and proj4js) only calls the service's public APIs; ``/ui/config.json`` tells it the synchronous limits (so it can
send a large raster to ``/jobs`` up front), whether POSTs need an API key and the optional basemap, and
``/ui/crs/EPSG:<code>`` gives the map a CRS's proj4 definition from GDAL's database (no internet needed).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hndsr_raster.crs import proj4_definition

from .errors import ServiceError, error_response
from .settings import Settings
from .threads import run_in_thread

STATIC = Path(__file__).with_name("static")
# A CRS's definition never changes: browsers may keep it a day.
CRS_CACHE = "public, max-age=86400"


def content_security_policy(basemap_url: str | None) -> str:
    """Only the service itself (and the basemap's host, when one is set): no CDN, no inline script. blob: carries
    decoded TIFFs and results, and OpenLayers' decoding workers; WebAssembly is the TIFF decoder's zstd codec."""
    extra = ""
    if basemap_url:
        parts = urlsplit(basemap_url)
        extra = f" {parts.scheme}://{parts.netloc}"
    return (f"default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
            f"img-src 'self' blob: data:{extra}; connect-src 'self'{extra}; worker-src 'self' blob:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def ui_routes(settings: Settings) -> list[BaseRoute]:
    csp = content_security_policy(settings.ui_basemap_url)

    async def page(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                            headers={"content-security-policy": csp, "cache-control": "no-cache"})

    async def crs(request: Request) -> Response:
        code = request.path_params["code"]
        definition = await run_in_thread(proj4_definition, code)
        if definition is None:
            return error_response(ServiceError(404, "unknown_crs", f"{code[:40]!r} is not an EPSG code this "
                                               "service's PROJ database knows (expected EPSG:<number>)"))
        return PlainTextResponse(definition, headers={"cache-control": CRS_CACHE})

    async def config(_: Request) -> Response:
        return JSONResponse({
            "max_image_pixels": settings.max_image_pixels,
            "max_output_pixels": settings.max_output_pixels,
            "max_payload_bytes": settings.max_payload_bytes,
            "max_job_upload_bytes": settings.max_job_upload_bytes,
            "api_key_required": bool(settings.api_keys),
            "basemap_url": settings.ui_basemap_url,
        })

    return [Route("/ui", page), Route("/ui/", page), Route("/ui/config.json", config), Route("/ui/crs/{code}", crs),
            Mount("/ui", StaticFiles(directory=STATIC), name="ui")]
