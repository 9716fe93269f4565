"""The few key-value primitives every piece of server-side state is built from.

Sessions, pre-login state, the replay cache, users and connection status all
sit on this interface, so the memory store (demo) and Redis (production:
standalone, Sentinel or Cluster) stay interchangeable and are tested by one
shared suite. No operation spans two keys atomically, which keeps every call
valid on Redis Cluster.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Protocol


class Subscriber(Protocol):
    """Told what arrives on a channel, and whether it may have missed anything."""

    def received(self, message: str) -> None: ...

    def alive(self, since: float) -> None:
        """A heartbeat sent at `since` (time.monotonic) was answered: everything published
        before it has arrived."""

    def lost(self) -> None:
        """The subscription broke, or is back after a break: messages published meanwhile
        may never arrive, and the store may have lost its data."""


class KeyValueStore(ABC):
    """Any failure to reach the backend raises `StoreUnavailable` (fail closed)."""

    kind: str = "abstract"
    # Whether `publish` reaches other processes (and `listen` hears them).
    shared: bool = False

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        only_if_new: bool = False,
        only_if_exists: bool = False,
    ) -> bool:
        """Store `value`; False when the condition fails and nothing was written.

        `only_if_new` is the atomic SET NX behind replay checks and shared keys;
        `only_if_exists` (SET XX) rewrites a value without resurrecting one that
        was deleted meanwhile, e.g. a session touched while it is being revoked.
        """

    @abstractmethod
    async def replace(self, key: str, expected: bytes, value: bytes) -> bool:
        """Compare-and-set: write `value` only if the key still holds `expected` (TTL kept).

        Read-modify-write of shared records (a login updating a user while an
        admin retires it) must not silently undo the other writer's change.
        """

    @abstractmethod
    async def delete_if(self, key: str, expected: bytes) -> bool:
        """Compare-and-delete: remove the key only while it still holds `expected`.

        A lock's holder that outlived the lock's TTL must not delete the lock
        another process has taken since.
        """

    @abstractmethod
    async def take(self, key: str) -> bytes | None:
        """Atomic get-and-delete, so single-use values can be consumed exactly once."""

    @abstractmethod
    async def delete(self, *keys: str, durable: bool = False) -> int:
        """Remove the keys; `durable`: answer only once a failover cannot bring them back."""

    @abstractmethod
    async def expire(self, key: str, ttl: float) -> None: ...

    @abstractmethod
    async def add_member(self, key: str, member: str, ttl: float | None = None) -> None: ...

    @abstractmethod
    async def remove_member(self, key: str, member: str) -> None: ...

    @abstractmethod
    async def members(self, key: str) -> set[str]: ...

    @abstractmethod
    async def hset(self, key: str, fields: dict[str, str]) -> None: ...

    @abstractmethod
    async def hgetall(self, key: str) -> dict[str, str]: ...

    @abstractmethod
    async def publish(self, channel: str, message: str, confirm: bool = False) -> None:
        """Tell every process listening on `channel`.

        With `confirm`, return only once every process that may be acting on
        what it heard before has processed the message, or provably stopped
        acting on it (its subscription went quiet long enough).
        """

    @abstractmethod
    async def listen(self, channel: str, subscriber: Subscriber, stop: asyncio.Event) -> None:
        """Deliver `channel` to `subscriber` until `stop` is set."""

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...
