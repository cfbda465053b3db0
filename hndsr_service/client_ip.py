"""The client's address: the socket peer, or behind trusted proxies the address they forwarded."""

from __future__ import annotations

import ipaddress

from starlette.datastructures import Headers
from starlette.types import Scope

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def client_ip(scope: Scope, trusted: Networks) -> str:
    """The socket peer, or with a trusted proxy as peer the nearest untrusted ``X-Forwarded-For`` hop."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    forwarded = Headers(scope=scope).get("x-forwarded-for")
    if not forwarded or not _in(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _in(hop, trusted):
            return hop
    return peer


def _in(address: str, networks: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
