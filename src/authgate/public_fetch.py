"""A client for an outsider's URL that connects to public addresses only.

`public_addresses.url_problem` has already refused a plain-http URL or a
private address written in it; a host name is checked here, when it is
resolved, so a name that resolved to a public address when it was saved and
to a private one since is refused then. Callers pass `allow_redirects=False`:
a redirect could name a private address that no check saw.
"""

from __future__ import annotations

import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from authgate.public_addresses import Allowed, is_public


class PublicResolver(AbstractResolver):
    """The system resolver's answer with every non-public address dropped."""

    def __init__(self, allowed: Allowed = is_public) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if self._allowed(r["host"])]
        if not kept:
            raise OSError(f"{host} has no public address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def public_session(timeout: float, allowed: Allowed = is_public) -> aiohttp.ClientSession:
    """Proxy variables are ignored too: a proxy would connect wherever the URL says."""
    connector = aiohttp.TCPConnector(resolver=PublicResolver(allowed))
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False
    )
