"""Per-connection health as operators see it: last failure and last success, shared in the store."""

from __future__ import annotations

import time

from authgate.session.kv import KeyValueStore


class ConnectionStatus:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    async def failure(self, connection: str, reason: str, correlation_id: str) -> None:
        await self._kv.hset(
            "conn-status:" + connection,
            {
                "last_failure_at": str(time.time()),
                "last_failure_reason": reason,
                "last_failure_correlation_id": correlation_id,
            },
        )

    async def success(self, connection: str) -> None:
        await self._kv.hset("conn-status:" + connection, {"last_success_at": str(time.time())})

    async def get(self, connection: str) -> dict[str, str]:
        return await self._kv.hgetall("conn-status:" + connection)
