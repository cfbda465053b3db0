"""Georeferenced rasters in and out: GeoTIFF reading by windows, band plans, scene-wide radiometry,
and Cloud-Optimized GeoTIFF products.

Shared by the service (synchronous GeoTIFF answers and scene jobs) and the CLI; it knows rasterio and
``hndsr_model``'s streaming pipeline, and nothing of HTTP.
"""

from .bands import BandPlan
from .scene import (
    UNCERTAINTY,
    RasterError,
    RasterTooLarge,
    SceneStep,
    SceneUpscaler,
    array_to_tiff,
    is_tiff,
    open_raster,
    uncertainty_path,
    uncertainty_to_tiff,
)

__all__ = ["UNCERTAINTY", "BandPlan", "RasterError", "RasterTooLarge", "SceneStep", "SceneUpscaler", "array_to_tiff",
           "is_tiff", "open_raster", "uncertainty_path", "uncertainty_to_tiff"]
