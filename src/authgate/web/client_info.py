"""Who is really calling: `X-Forwarded-*` and request ids count only from trusted proxies."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
KNOWN_ADDRESSES = 4096


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
        self._known: dict[str, bool] = {}
        self._described: dict[tuple[str | None, ...], ClientInfo] = {}

    def contains(self, address: str | None) -> bool:
        """Whether `address` is a trusted proxy; the few addresses seen repeat, so remember."""
        if not address:
            return False
        known = self._known.get(address)
        if known is None:
            if len(self._known) >= KNOWN_ADDRESSES:
                self._known.clear()
            known = self._known[address] = self._lookup(address)
        return known

    def _lookup(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def client_info(self, request: web.Request) -> ClientInfo:
        return self.describe(request.remote or "", request.scheme, request.host, request.headers)

    def describe(self, peer: str, scheme: str, host: str, headers: MultiMapping[str]) -> ClientInfo:
        """The client behind `peer`, as far as the trusted proxies in front of it say.

        A front proxy sends the same few forwarding headers over and over, so
        each answer is remembered by everything it was read from.
        """
        if not self.contains(peer):
            return ClientInfo(peer, scheme, host, False, peer)
        key = (
            peer,
            scheme,
            host,
            headers.get("X-Forwarded-Proto"),
            headers.get("X-Forwarded-Host"),
            *headers.getall("X-Forwarded-For", ()),
        )
        known = self._described.get(key)
        if known is None:
            if len(self._described) >= KNOWN_ADDRESSES:
                self._described.clear()
            known = self._described[key] = self._forwarded(peer, scheme, host, headers)
        return known

    def _forwarded(
        self, peer: str, scheme: str, host: str, headers: MultiMapping[str]
    ) -> ClientInfo:
        chain = [
            hop.strip()
            for value in headers.getall("X-Forwarded-For", ())
            for hop in value.split(",")
            if hop.strip()
        ]
        client = peer
        for hop in reversed(chain):
            client = hop
            if not self.contains(hop):
                break
        proto = headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip()
        host = headers.get("X-Forwarded-Host", host).split(",")[0].strip()
        return ClientInfo(client, proto, host, True, ", ".join([*chain, peer]))


def correlation_id(request: web.Request, trusted: bool) -> str:
    return correlation_id_from(request.headers, trusted)


def correlation_id_from(headers: MultiMapping[str], trusted: bool) -> str:
    """Reuse a trusted front end's request id so one id follows the request through."""
    incoming = headers.get("X-Request-Id", "")
    if trusted and 0 < len(incoming) <= 128 and incoming.isprintable():
        return incoming
    return _ids.next()


class _RandomIds:
    """Unpredictable 64-bit ids, from one `os.urandom` call per 512 of them, not per request.

    A forked child refills its own pool, so two processes never hand out the same ids.
    """

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        self._pid = 0

    def next(self) -> str:
        if self._at >= len(self._pool) or self._pid != os.getpid():
            self._pool, self._at, self._pid = os.urandom(ID_BYTES * 512), 0, os.getpid()
        chunk = self._pool[self._at : self._at + ID_BYTES]
        self._at += ID_BYTES
        return chunk.hex()


ID_BYTES = 8
_ids = _RandomIds()


CLIENT: web.RequestKey[ClientInfo] = web.RequestKey("authgate_client", ClientInfo)
CID: web.RequestKey[str] = web.RequestKey("authgate_cid", str)
