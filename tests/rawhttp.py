"""HTTP responses read by hand from a raw socket, for tests that write requests verbatim."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

_OWN = frozenset({"date", "server"})


@dataclass
class Raw:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def upstream_headers(self) -> list[tuple[str, str]]:
        """The header lines the echo upstream received, in order, duplicates kept."""
        return [(k, v) for k, v in self.json()["headers"]]

    def comparable(self) -> list[tuple[str, str]]:
        """Every header line but `Date` and the `Server` aiohttp adds to its own answers, sorted:
        what two front ends answering the same request must agree on."""
        return sorted((k.lower(), v) for k, v in self.headers.items() if k.lower() not in _OWN)

    def seen(self) -> CIMultiDict[str]:
        """What reached the upstream, looked up by name."""
        return CIMultiDict(self.upstream_headers())


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def read_response(reader: asyncio.StreamReader, method: str = "GET") -> Raw:
    """The next final response on the connection (a 100 Continue before it is skipped)."""
    status = 100
    while status < 200:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.rstrip("\r\n").split("\r\n")
        status = int(status_line.split(" ")[1])
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name, value.strip())
    if method == "HEAD" or status in (204, 304):
        return Raw(status, headers, b"")
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return Raw(status, headers, await _read_chunked(reader))
    if "Content-Length" in headers:
        return Raw(status, headers, await reader.readexactly(int(headers["Content-Length"])))
    return Raw(status, headers, await reader.read())
