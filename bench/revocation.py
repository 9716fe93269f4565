"""Revocation delay: log out through one connection, time until every other one is refused.

Each probe is its own keep-alive TCP connection, so with SO_REUSEPORT the
probes land on different workers of one authgate, and some on another
replica; a connection stays with its worker, so polling it asks that worker.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

POLL_INTERVAL = 0.002
GIVE_UP_AFTER = 5.0


@dataclass
class KeepAlive:
    """One HTTP/1.1 connection, reused for every request it sends."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    host: str

    @classmethod
    async def open(cls, port: int) -> KeepAlive:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, f"127.0.0.1:{port}")

    async def get(self, path: str, cookie: str, extra: str = "") -> int:
        """Send a GET with the session cookie; the status, the body read and discarded."""
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: application/json\r\n"
            f"{extra}Cookie: authgate={cookie}\r\n\r\n".encode()
        )
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(
            (
                int(v)
                for k, _, v in (x.partition(":") for x in lines[1:])
                if k.lower() == "content-length"
            ),
            None,
        )
        if length is None:
            raise RuntimeError(f"{path}: response without Content-Length: {lines[0]}")
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def _refused_at(conn: KeepAlive, path: str, cookie: str, deadline: float) -> float:
    while time.perf_counter() < deadline:
        if await conn.get(path, cookie) == 401:
            return time.perf_counter()
        await asyncio.sleep(POLL_INTERVAL)
    raise RuntimeError(f"{conn.host} still accepts a logged-out session after {GIVE_UP_AFTER}s")


async def delay(logout_port: int, probe_ports: list[int], cookie: str, path: str) -> float:
    """Seconds from the logout's answer until the last probe connection refused the cookie.

    `probe_ports` has one entry per probe connection (repeat a port for several).
    """
    conns = [await KeepAlive.open(port) for port in probe_ports]
    logout = await KeepAlive.open(logout_port)
    try:
        for conn in conns:
            status = await conn.get(path, cookie)
            if status != 200:
                raise RuntimeError(f"{conn.host}{path} answered {status} before the logout")
        # As the app's own sign-out link: a cross-site GET would only be asked to confirm.
        status = await logout.get("/_authgate/logout", cookie, "Sec-Fetch-Site: same-origin\r\n")
        if status not in (200, 302):
            raise RuntimeError(f"logout answered {status}")
        done = time.perf_counter()
        refused = await asyncio.gather(
            *(_refused_at(c, path, cookie, done + GIVE_UP_AFTER) for c in conns)
        )
        return max(refused) - done
    finally:
        for conn in [*conns, logout]:
            await conn.close()
