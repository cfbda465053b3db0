"""The HTTP server's own answer to a request it cannot parse (a ``Content-Length`` that is not a number, a
broken request line or header), in the service's JSON envelope instead of uvicorn's plain text.

Such a request never reaches the application, so uvicorn's protocols are taught to answer it:
:func:`install` replaces their ``send_400_response`` (called in the server's worker, before it serves).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from . import metrics
from .errors import ERROR_HEADER, REQUEST_ID_HEADER, error_body

CODE = "malformed_request"


def install() -> None:
    from uvicorn.protocols.http import h11_impl

    h11_impl.H11Protocol.send_400_response = _send_400_response  # type: ignore[method-assign]
    try:  # uvicorn's faster parser, used instead of h11 when httptools is installed
        from uvicorn.protocols.http import httptools_impl
    except ImportError:
        return
    httptools_impl.HttpToolsProtocol.send_400_response = _send_400_response  # type: ignore[method-assign]


def _send_400_response(protocol: Any, msg: str) -> None:
    rid = uuid.uuid4().hex
    body = json.dumps(error_body(CODE, f"the HTTP request could not be parsed ({msg.rstrip('.')}): check its "
                                       "request line, headers and Content-Length", request_id=rid)).encode()
    head = ["HTTP/1.1 400 Bad Request", "content-type: application/json", f"content-length: {len(body)}",
            f"{ERROR_HEADER}: {CODE}", f"{REQUEST_ID_HEADER}: {rid}", "connection: close"]
    protocol.transport.write("\r\n".join(head).encode() + b"\r\n\r\n" + body)
    protocol.transport.close()
    metrics.record_response("", 400, CODE)
