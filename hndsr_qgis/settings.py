"""The plugin's settings (QGIS's user profile): the service's URL and the id of the auth configuration that
holds its API key. The key itself stays in QGIS's encrypted authentication database."""

from __future__ import annotations

from qgis.core import QgsSettings

DEFAULT_URL = "http://127.0.0.1:8000"
URL_KEY = "hndsr/service_url"
AUTH_KEY = "hndsr/auth_config"


def service_url() -> str:
    return str(QgsSettings().value(URL_KEY, DEFAULT_URL))


def auth_config() -> str:
    return str(QgsSettings().value(AUTH_KEY, ""))


def save(url: str, authcfg: str) -> None:
    settings = QgsSettings()
    settings.setValue(URL_KEY, url.strip() or DEFAULT_URL)
    settings.setValue(AUTH_KEY, authcfg)
