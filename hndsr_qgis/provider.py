"""The Processing provider "HNDSR" (id ``hndsr``)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithm import SuperResolveAlgorithm

ICON = Path(__file__).with_name("icon.png")


class HndsrProvider(QgsProcessingProvider):
    def id(self) -> str:  # noqa: A003 (QGIS's name)
        return "hndsr"

    def name(self) -> str:
        return "HNDSR"

    def longName(self) -> str:  # noqa: N802
        return "HNDSR satellite image super-resolution"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:  # noqa: N802
        self.addAlgorithm(SuperResolveAlgorithm())
