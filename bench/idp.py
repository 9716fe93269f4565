"""The benchmark's OpenID Provider: the test suite's TestOP, alone in its own process.

Usage: python -m bench.idp PORT CLIENT_SECRET
"""

from __future__ import annotations

import asyncio
import sys

from tests.oidc_op import TestOP


async def serve(port: int, secret: str) -> None:
    op = TestOP(client_id="authgate", client_secret=secret)
    op.port = port
    await op.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))
