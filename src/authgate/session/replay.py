"""Replay cache: an assertion or token id is accepted once across every replica."""

from __future__ import annotations

import hashlib

from authgate.session.kv import KeyValueStore


class ReplayCache:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    async def first_use(self, namespace: str, item_id: str, ttl: float) -> bool:
        """True the first time (`SET NX`), False for every later use within `ttl`."""
        digest = hashlib.sha256(f"{namespace}\x00{item_id}".encode()).hexdigest()
        return await self._kv.set("replay:" + digest, b"1", ttl=max(ttl, 1.0), only_if_new=True)
