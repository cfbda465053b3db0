"""HNDSR for QGIS: a Processing provider whose algorithm sends a raster layer to a running HNDSR service.

QGIS imports this package with its own Python (PyQGIS), not the service's environment: the plugin uses the
standard library and the QGIS API only.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """QGIS's entry point for a plugin (``iface`` is None under ``qgis_process``)."""
    from .plugin import HndsrPlugin

    return HndsrPlugin(iface)
