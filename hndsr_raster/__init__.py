"""Georeferenced rasters in and out: GeoTIFF reading by windows, band plans, scene-wide radiometry,
and Cloud-Optimized GeoTIFF products.

Shared by the service (synchronous GeoTIFF answers and scene jobs) and the CLI; it knows rasterio and
``hndsr_model``'s streaming pipeline, and nothing of HTTP.
"""

from .bands import BandPlan, parse_bands
from .scene import RasterError, RasterTooLarge, SceneOptions, SceneUpscaler, array_to_tiff, is_tiff, open_raster

__all__ = ["BandPlan", "RasterError", "RasterTooLarge", "SceneOptions", "SceneUpscaler", "array_to_tiff", "is_tiff",
           "open_raster", "parse_bands"]
