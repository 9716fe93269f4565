"""In-memory state with deadlines: the development IdP keeps nothing on disk."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

V = TypeVar("V")


class ExpiringMap(Generic[V]):
    """Entries vanish at their deadline; expired ones are swept whenever a new one is added."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, V]] = {}

    def put(self, key: str, value: V, ttl: float) -> None:
        now = time.time()
        for stale in [k for k, (deadline, _) in self._items.items() if deadline <= now]:
            del self._items[stale]
        self._items[key] = (now + ttl, value)

    def get(self, key: str) -> V | None:
        entry = self._items.get(key)
        return entry[1] if entry is not None and entry[0] > time.time() else None

    def take(self, key: str) -> V | None:
        """Remove and return: what single-use values (codes, pending logins) are read with."""
        entry = self._items.pop(key, None)
        return entry[1] if entry is not None and entry[0] > time.time() else None

    def discard(self, key: str) -> None:
        self._items.pop(key, None)
