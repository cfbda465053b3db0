"""The plugin: registers the Processing provider (also under ``qgis_process``) and, in the desktop, adds
Plugins > HNDSR > Settings for the service's URL and API key."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import QAction, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QWidget

from . import settings
from .provider import ICON, HndsrProvider
from .service import Service, ServiceError, api_key

MENU = "HNDSR"


class HndsrPlugin:
    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: HndsrProvider | None = None
        self.action: QAction | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's names)
        self.provider = HndsrProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        from qgis.PyQt.QtGui import QIcon

        self.action = QAction(QIcon(str(ICON)), "Settings…", self.iface.mainWindow())
        self.action.triggered.connect(self.show_settings)
        self.iface.addPluginToMenu(MENU, self.action)

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        if self.action is not None:
            self.iface.removePluginMenu(MENU, self.action)

    def show_settings(self) -> None:
        SettingsDialog(self.iface.mainWindow()).exec_()


class SettingsDialog(QDialog):
    """The service's URL and the auth configuration holding its key, with a check of both against the service."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from qgis.gui import QgsAuthConfigSelect

        self.setWindowTitle("HNDSR settings")
        self.url = QLineEdit(settings.service_url())
        self.auth = QgsAuthConfigSelect(self)
        self.auth.setConfigId(settings.auth_config())
        self.result_label = QLabel("The API key is the password of a Basic configuration (any user name).")
        self.result_label.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        check = buttons.addButton("Check", QDialogButtonBox.ActionRole)
        check.clicked.connect(self.check)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout = QFormLayout(self)
        layout.addRow("Service URL", self.url)
        layout.addRow("API key", self.auth)
        layout.addRow(self.result_label)
        layout.addRow(buttons)

    def check(self) -> None:
        try:
            service = Service(self.url.text(), api_key(self.auth.configId()))
            version = service.get("/version").json()
            service.get("/ready")
            key = self.check_key(service)
        except ServiceError as exc:
            self.result_label.setText(f"✗ {exc}")
            return
        self.result_label.setText(f"✓ HNDSR model {version.get('model_version')} on {version.get('device')}, "
                                  f"ready; {key}")

    @staticmethod
    def check_key(service: Service) -> str:
        """A POST without an image: the service checks the key first (401), then finds the image missing (422)."""
        try:
            service.post_form("/upscale", {}, "", b"")
        except ServiceError as exc:
            if exc.status != 422:  # 401: the key; 429, 503: the service's own words
                raise
            return "API key accepted" if service.key else "no API key needed"
        raise ServiceError("the service took an empty image: is this an HNDSR service?")

    def save(self) -> None:
        settings.save(self.url.text(), self.auth.configId())
        self.accept()
