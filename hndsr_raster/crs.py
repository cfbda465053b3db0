"""Coordinate reference systems as a web map needs them: a proj4 definition for an EPSG code, from GDAL's own
PROJ database, so that the page can place a raster and show longitude and latitude with no internet."""

from __future__ import annotations

import re

from rasterio.crs import CRS
from rasterio.errors import CRSError

EPSG_CODE = re.compile(r"EPSG:(\d{1,9})")


def proj4_definition(code: str) -> str | None:
    """``+proj=utm +zone=31 +datum=WGS84 +units=m +no_defs`` for ``EPSG:32631``; None for a code PROJ does not know
    or that is not ``EPSG:<number>``."""
    if not EPSG_CODE.fullmatch(code):
        return None
    try:
        parameters = CRS.from_epsg(int(code.split(":")[1])).to_dict()
    except CRSError:
        return None
    # rasterio's to_proj4() writes flags as "+no_defs=True", which proj4js does not read: "+no_defs" it does.
    return " ".join(f"+{key}" if value is True else f"+{key}={value}" for key, value in parameters.items()) or None
