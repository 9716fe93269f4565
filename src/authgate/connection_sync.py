"""Every replica's registry follows the store: change messages, and a reconcile behind them.

The replica that makes a change installs it at once and announces it on the
invalidation channel; the others reload that one connection when they hear
it. A message can be lost (a broken subscription, a paused replica), so a
reconcile compares every document's version with what is installed every
RECONCILE_INTERVAL and at once after a subscription comes back. Loads are
serialised, so an older version can never be installed after a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError

from authgate.connection_store import (
    CHANGED,
    ConnectionDocument,
    ConnectionStore,
    Materialiser,
)
from authgate.connections import Connection, Connections
from authgate.errors import AuthgateError
from authgate.session.cache import INVALIDATIONS

log = logging.getLogger("authgate.connections")
RECONCILE_INTERVAL = 5.0


class ConnectionSync:
    def __init__(
        self,
        store: ConnectionStore,
        registry: Connections,
        materialiser: Materialiser,
    ) -> None:
        self.store = store
        self.registry = registry
        self.materialiser = materialiser
        self._lock = asyncio.Lock()
        # Versions that could not be used, so the reconcile says so once, not every round.
        self._unusable: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def describe(self, doc: ConnectionDocument) -> Connection:
        """The document as an installable connection; raises when it cannot be used."""
        settings = self.materialiser.settings(doc)
        return self.registry.describe(settings, "store", doc.version, doc.active)

    async def load(self, conn_id: str) -> None:
        """Install the stored version of one connection, or remove it if it is gone."""
        async with self._lock:
            doc = await self.store.get(conn_id)
            current = self.registry.get(conn_id)
            if current is not None and current.source == "file":
                if doc is not None:
                    log.warning("store connection %s ignored: the config file defines it", conn_id)
                return
            if doc is None:
                if current is not None:
                    await self.registry.remove(conn_id)
                    self.materialiser.forget(conn_id)
                return
            if current is not None and current.version == doc.version:
                return
            if self._unusable.get(conn_id) == doc.version:
                return
            try:
                conn = self.describe(doc)
            except (ValueError, ValidationError, AuthgateError) as exc:
                log.warning("store connection %s v%d cannot be used: %s", conn_id, doc.version, exc)
                self._unusable[conn_id] = doc.version
                return
            self._unusable.pop(conn_id, None)
            await self.registry.install(conn)

    async def reconcile(self) -> None:
        ids = await self.store.ids()
        installed = {c.id for c in self.registry if c.source == "store"}
        for conn_id in sorted(ids | installed):
            await self.load(conn_id)

    async def announce(self, conn_id: str) -> None:
        """After a change here: in force here now, and on the others when they hear of it."""
        await self.load(conn_id)
        await self.store.kv.publish(INVALIDATIONS, CHANGED + conn_id)

    def received(self, message: str) -> None:
        conn_id = message.removeprefix(CHANGED)
        self._spawn(self.load(conn_id))

    def lost(self) -> None:
        self._wake.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except AuthgateError as exc:
            log.warning("could not load a changed connection (%s); the reconcile retries", exc)
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until `stop`; ends by the event, never by cancellation mid-command."""
        while not stop.is_set():
            try:
                await self.reconcile()
            except AuthgateError as exc:
                log.warning("connection reconcile failed (%s); retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RECONCILE_INTERVAL)
            self._wake.clear()

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
