"""Who is really calling: `X-Forwarded-*` and request ids count only from trusted proxies."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str
    proto: str
    host: str
    via_trusted_proxy: bool
    forwarded_for: str


class TrustedProxies:
    def __init__(self, networks: list[str]) -> None:
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )

    def contains(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def client_info(self, request: web.Request) -> ClientInfo:
        peer = request.remote or ""
        if not self.contains(peer):
            return ClientInfo(peer, request.scheme, request.host, False, peer)
        chain = [
            hop.strip()
            for value in request.headers.getall("X-Forwarded-For", ())
            for hop in value.split(",")
            if hop.strip()
        ]
        client = peer
        for hop in reversed(chain):
            client = hop
            if not self.contains(hop):
                break
        proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
        host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
        return ClientInfo(client, proto, host, True, ", ".join([*chain, peer]))


def correlation_id(request: web.Request, trusted: bool) -> str:
    """Reuse a trusted front end's request id so one id follows the request through."""
    incoming = request.headers.get("X-Request-Id", "")
    if trusted and 0 < len(incoming) <= 128 and incoming.isprintable():
        return incoming
    return secrets.token_hex(8)


CLIENT: web.RequestKey[ClientInfo] = web.RequestKey("authgate_client", ClientInfo)
CID: web.RequestKey[str] = web.RequestKey("authgate_cid", str)
