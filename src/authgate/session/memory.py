"""In-process store for the demo and single-process development only."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from authgate.session.kv import KeyValueStore, Subscriber


class MemoryStore(KeyValueStore):
    """Dict-backed store with lazy expiry; state is lost on restart and not shared."""

    kind = "memory"

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._data: dict[str, Any] = {}
        self._expiry: dict[str, float] = {}
        self._clock = clock

    def _live(self, key: str) -> bool:
        deadline = self._expiry.get(key)
        if deadline is not None and deadline <= self._clock():
            self._data.pop(key, None)
            self._expiry.pop(key, None)
        return key in self._data

    def _put(self, key: str, value: Any, ttl: float | None) -> None:
        self._data[key] = value
        if ttl is None:
            self._expiry.pop(key, None)
        else:
            self._expiry[key] = self._clock() + ttl

    async def get(self, key: str) -> bytes | None:
        return self._data[key] if self._live(key) else None

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        only_if_new: bool = False,
        only_if_exists: bool = False,
    ) -> bool:
        if only_if_new and only_if_exists:
            raise ValueError("only_if_new and only_if_exists exclude each other")
        live = self._live(key)
        if (only_if_new and live) or (only_if_exists and not live):
            return False
        self._put(key, value, ttl)
        return True

    async def replace(self, key: str, expected: bytes, value: bytes) -> bool:
        if not self._live(key) or self._data[key] != expected:
            return False
        self._data[key] = value
        return True

    async def delete_if(self, key: str, expected: bytes) -> bool:
        if not self._live(key) or self._data[key] != expected:
            return False
        self._data.pop(key)
        self._expiry.pop(key, None)
        return True

    async def take(self, key: str) -> bytes | None:
        if not self._live(key):
            return None
        self._expiry.pop(key, None)
        return self._data.pop(key)

    async def delete(self, *keys: str, durable: bool = False) -> int:
        found = 0
        for key in keys:
            found += self._live(key)
            self._data.pop(key, None)
            self._expiry.pop(key, None)
        return found

    async def expire(self, key: str, ttl: float) -> None:
        if self._live(key):
            self._expiry[key] = self._clock() + ttl

    async def add_member(self, key: str, member: str, ttl: float | None = None) -> None:
        members = self._data[key] if self._live(key) else set()
        members.add(member)
        self._data[key] = members
        if ttl is not None:
            self._expiry[key] = max(self._expiry.get(key, 0.0), self._clock() + ttl)

    async def remove_member(self, key: str, member: str) -> None:
        if self._live(key):
            self._data[key].discard(member)
            if not self._data[key]:
                await self.delete(key)

    async def members(self, key: str) -> set[str]:
        return set(self._data[key]) if self._live(key) else set()

    async def hset(self, key: str, fields: dict[str, str]) -> None:
        current = self._data[key] if self._live(key) else {}
        current.update(fields)
        self._data[key] = current

    async def hgetall(self, key: str) -> dict[str, str]:
        return dict(self._data[key]) if self._live(key) else {}

    async def publish(self, channel: str, message: str, confirm: bool = False) -> None:
        """Nobody else can be listening: this store lives inside one process."""

    async def listen(self, channel: str, subscriber: Subscriber, stop: asyncio.Event) -> None:
        """There is no other process to hear from, so nothing ever arrives."""
        await stop.wait()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
        self._expiry.clear()
