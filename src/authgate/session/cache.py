"""The in-process session cache of the hot path, kept honest by Redis pub/sub.

Reading the session from Redis costs every request a round trip and more CPU
than all of authgate's checks. So each process keeps the sessions it has
just read, on three conditions that keep revocation immediate everywhere:

- every delete, revocation or update publishes the session's digest, and
  every process drops that entry when the message arrives (a millisecond);
- the subscription proves itself alive with a PING every HEARTBEAT seconds,
  and an answer keeps the cache usable until LIVENESS seconds after that PING
  was *sent* (not when its answer was read: a paused process reads old
  answers late); when none came in time, or the connection broke, the cache
  is emptied and bypassed until the subscription is back;
- a revocation (logout, deactivation) answers only once every replica that
  may be caching has processed it, or can no longer be using what it cached
  before it (`KeyValueStore.publish(..., confirm=True)`): no replica serves a
  session after its logout has answered, even one that was paused meanwhile;
- an entry read from the store while an invalidation arrived is not kept
  (the `epoch` check), so a stale read cannot outlive the message that
  revoked it.

The store still sees every session at least once per touch interval: the
session store serves an entry only while no idle-timeout touch is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

# What is cached: `sessions.Session`, which imports this module. The cache never looks
# inside an entry, so it takes the type as a parameter instead of importing it back.
Entry = TypeVar("Entry")

INVALIDATIONS = "session-invalidations"
HEARTBEAT = 0.25
LIVENESS = 0.75
# A replica's registration outlives its cache's usability by this much; a confirmed
# revocation waits at most LIVENESS + MARGIN for the replicas that did not answer.
MARGIN = 0.25
MAX_ENTRIES = 10_000


class SessionCache(Generic[Entry]):
    """Sessions by the SHA-256 digest of their id, usable only while the subscription lives."""

    def __init__(
        self, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: dict[str, Entry] = {}
        self._max = max_entries
        self._clock = clock
        self._alive_until = 0.0
        self.epoch = 0

    def usable(self) -> bool:
        return self._clock() < self._alive_until

    def get(self, digest: str) -> Entry | None:
        if not self.usable():
            if self._entries:
                self._entries.clear()
            return None
        return self._entries.get(digest)

    def offer(self, digest: str, session: Entry, epoch: int) -> None:
        """Keep a session just read from the store, unless anything was invalidated meanwhile."""
        if epoch != self.epoch or not self.usable():
            return
        if digest not in self._entries and len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]
        self._entries[digest] = session

    def drop(self, digest: str) -> None:
        self.epoch += 1
        self._entries.pop(digest, None)

    # -- the subscription's side (authgate.session.kv.Subscriber) --------------------------

    def received(self, message: str) -> None:
        self.drop(message)

    def alive(self, since: float) -> None:
        """A heartbeat sent at `since` (this clock) was answered: every message published
        before it has been delivered."""
        if not self.usable():
            self.lost()
        self._alive_until = max(self._alive_until, since + LIVENESS)

    def lost(self) -> None:
        """Messages may have been missed: forget everything and stop serving from memory."""
        self.epoch += 1
        self._alive_until = 0.0
        self._entries.clear()
