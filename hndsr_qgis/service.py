"""The HNDSR service as the plugin talks to it: QGIS's own network stack (its proxy, SSL and timeout settings)
through ``QgsBlockingNetworkRequest``, the API key read from QGIS's authentication database.

Every refusal of the service reaches the user in the service's own words (its JSON envelope's ``detail``),
with the wait a 429 or 503 asks for.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsBlockingNetworkRequest, QgsFeedback
from qgis.PyQt.QtCore import QByteArray, QUrl
from qgis.PyQt.QtNetwork import QNetworkRequest

# Where each auth method keeps its secret: Basic's password (any user name), an ESRI token configuration's token.
SECRET_FIELDS = {"Basic": "password", "EsriToken": "token"}


class ServiceError(Exception):
    """The service refused a request (its envelope), or could not be reached; the message is for the user."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def api_key(authcfg: str) -> str | None:
    """The API key kept in the auth configuration ``authcfg`` (None for no configuration)."""
    if not authcfg:
        return None
    manager = QgsApplication.authManager()
    config = QgsAuthMethodConfig()
    loaded = manager.loadAuthenticationConfig(authcfg, config, True)
    if isinstance(loaded, tuple):  # PyQGIS 3.22 answers (ok, config)
        loaded, config = loaded
    if not loaded or not config.isValid():
        raise ServiceError(f"the authentication configuration {authcfg!r} cannot be read: is it in this profile's "
                           "authentication database, and is the master password set?")
    field = SECRET_FIELDS.get(config.method())
    if field is None:
        raise ServiceError(f"the authentication configuration {authcfg!r} uses the method {config.method()}; "
                           "HNDSR reads its API key from a Basic configuration (the password is the key)")
    return config.config(field) or None


def multipart(fields: dict[str, str], file_name: str, file_data: bytes) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with text fields and one file, ``image``; and its content type."""
    boundary = f"hndsr-{uuid.uuid4().hex}"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    safe_name = file_name.replace('"', "_")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{safe_name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + file_data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Service:
    """One HNDSR service: ``url`` (``http://host:8000``) and the API key for its POSTs and DELETEs."""

    def __init__(self, url: str, key: str | None, feedback: QgsFeedback | None = None) -> None:
        self.url = url.strip().rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ServiceError(f"the service URL {url!r} is not an http:// or https:// address")
        self.key, self.feedback = key, feedback

    def get(self, path: str) -> Reply:
        return self._send("GET", path)

    def get_range(self, path: str, first: int, last: int) -> Reply:
        """Bytes ``first``..``last`` of a file (206), or the whole file (200) where the server ignores ranges."""
        return self._send("GET", path, headers={b"Range": f"bytes={first}-{last}".encode()})

    def delete(self, path: str) -> Reply:
        return self._send("DELETE", path)

    def post_form(self, path: str, fields: dict[str, str], file_name: str, file_data: bytes) -> Reply:
        body, content_type = multipart(fields, file_name, file_data)
        return self._send("POST", path, body, content_type)

    def _send(self, method: str, path: str, body: bytes = b"", content_type: str = "",
              headers: dict[bytes, bytes] | None = None) -> Reply:
        request = QNetworkRequest(QUrl(self.url + path))
        for name, value in (headers or {}).items():
            request.setRawHeader(name, value)
        request.setRawHeader(b"Accept", b"application/json, image/tiff")
        if self.key:
            request.setRawHeader(b"Authorization", f"Bearer {self.key}".encode())
        if content_type:
            request.setHeader(QNetworkRequest.ContentTypeHeader, content_type)
        blocking = QgsBlockingNetworkRequest()
        # The feedback cancels a request in flight only for the transfer itself: a DELETE after a cancel must run.
        feedback = self.feedback if method != "DELETE" else None
        if method == "GET":
            code = blocking.get(request, True, feedback)
        elif method == "POST":
            code = blocking.post(request, QByteArray(body), True, feedback)
        else:
            code = blocking.deleteResource(request, feedback)
        reply = blocking.reply()
        status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
        if not status:  # nothing came back from the service: refused, timed out, cancelled, a bad certificate
            if self.feedback is not None and self.feedback.isCanceled():
                raise ServiceError("cancelled")
            raise ServiceError(f"cannot reach the HNDSR service at {self.url}: {blocking.errorMessage() or code}. "
                               "Is it running, and is this its address? (Plugins > HNDSR > Settings, or the "
                               "SERVICE_URL parameter)")
        headers = {bytes(name).decode("latin-1").lower(): bytes(reply.rawHeader(name)).decode("latin-1")
                   for name in reply.rawHeaderList()}
        result = Reply(int(status), bytes(reply.content()), headers)
        if result.status >= 400:
            raise refusal(result, method, path)
        return result


def refusal(reply: Reply, method: str, path: str) -> ServiceError:
    """The service's envelope as a message: ``413 image_too_large: <detail>``, with its wait when it gives one."""
    try:
        envelope = reply.json()
        code, detail = str(envelope["error"]), str(envelope["detail"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        code, detail = "error", reply.body[:300].decode("utf-8", "replace") or "no details"
    message = f"{method} {path}: {reply.status} {code}: {detail}"
    if reply.status == 401:
        message += " (set the API key: a Basic authentication configuration whose password is the key)"
    if reply.headers.get("retry-after"):
        message += f" (the service asks to retry after {reply.headers['retry-after']} s)"
    return ServiceError(message, reply.status, code)
