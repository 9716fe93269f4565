"""Reading a body up to a limit, whoever sent it (a browser, an admin, an IdP).

`StreamReader.read(n)` answers with whatever has arrived, which may be far
less than `n`: one call cannot tell a short body from a long one still on
its way, so a size cap built on it does not hold. This reads to the end, or
to one byte past the limit so the caller can refuse.
"""

from __future__ import annotations

from aiohttp import StreamReader

CHUNK = 65536


async def read_capped(stream: StreamReader, limit: int) -> bytes:
    """The whole body, or its first `limit + 1` bytes when it is longer than `limit`."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await stream.read(min(CHUNK, limit + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body)
