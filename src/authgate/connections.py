"""Which connections exist right now, and the engine that signs people in through each.

Connections from the config file are installed at start and never change;
connections made in the admin UI or API live in the store and are installed,
replaced and removed while authgate runs (`connection_sync`). Every handler
looks its connection up here once per request and keeps that `Connection`
for the whole request, so a change made meanwhile is seen entirely or not at
all. A replaced engine is stopped only after the new one is in place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from authgate.policy import AccessRules
from authgate.protocols.base import Protocol, ProtocolContext
from authgate.protocols.oidc import OidcProtocol
from authgate.protocols.saml import SamlProtocol
from authgate.settings import AccessSettings, OidcConnection, SamlConnection, own_paths

log = logging.getLogger("authgate.connections")
ConnectionSettings = OidcConnection | SamlConnection
Source = Literal["file", "store"]


@dataclass(frozen=True, slots=True)
class Connection:
    """One connection as it is in force: settings, access rules and (when usable) its engine.

    `active` is whether people may sign in through it. A store connection is
    inactive until an admin activates it, yet has an engine from the start:
    its SP metadata is served and its test sign-in runs before activation.
    """

    settings: ConnectionSettings
    rules: AccessRules
    engine: Protocol | None
    source: Source
    version: int
    active: bool

    @property
    def id(self) -> str:
        return self.settings.id

    @property
    def type(self) -> str:
        return self.settings.type

    @property
    def name(self) -> str:
        return self.settings.name


def build_engine(conn: ConnectionSettings, ctx: ProtocolContext) -> Protocol:
    if isinstance(conn, OidcConnection):
        return OidcProtocol(conn, ctx)
    return SamlProtocol(conn, ctx)


class Connections:
    """The registry every request reads; only `install` and `remove` change it."""

    def __init__(self, access: AccessSettings, files: Iterable[ConnectionSettings] = ()) -> None:
        """The config file's connections are known (rules, no engine) before start-up."""
        self._access = access
        self._ctx: ProtocolContext | None = None
        self._by_id = {c.id: self.describe(c, "file", 0, True) for c in files}
        self._paths: dict[str, tuple[str, str]] = {}
        self._route()

    def _route(self) -> None:
        """Which connection answers at each path a vendor document fixed (ACS, SLO, ...)."""
        self._paths = {
            path: (conn.id, role)
            for conn in self._by_id.values()
            for path, role in own_paths(conn.settings).items()
        }

    def owner(self, path: str) -> tuple[Connection, str] | None:
        """The connection and endpoint (acs, slo, metadata, callback) at an overridden path."""
        found = self._paths.get(path)
        if found is None:
            return None
        conn = self._by_id.get(found[0])
        return (conn, found[1]) if conn is not None else None

    def owns(self, path: str) -> bool:
        return path in self._paths

    def taken(self, path: str, by: str) -> str | None:
        """Which other connection already answers at `path`, if any."""
        found = self._paths.get(path)
        return found[0] if found is not None and found[0] != by else None

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_id.values()))

    def __contains__(self, conn_id: str) -> bool:
        return conn_id in self._by_id

    def get(self, conn_id: str) -> Connection | None:
        return self._by_id.get(conn_id)

    def active(self) -> list[Connection]:
        """The connections people may sign in through, in the order they were installed."""
        return [c for c in self._by_id.values() if c.active]

    def rules(self, conn_id: str) -> AccessRules | None:
        conn = self._by_id.get(conn_id)
        return conn.rules if conn is not None else None

    def engine(self, conn_id: str) -> Protocol | None:
        conn = self._by_id.get(conn_id)
        return conn.engine if conn is not None else None

    def started(self, ctx: ProtocolContext) -> None:
        """Engines can be built from now on (the IdP HTTP client exists)."""
        self._ctx = ctx

    def describe(
        self, settings: ConnectionSettings, source: Source, version: int, active: bool
    ) -> Connection:
        """A connection ready to install; its engine is built but not started."""
        engine = None
        if settings.enabled and self._ctx is not None:
            engine = build_engine(settings, self._ctx)
        rules = AccessRules.build(settings, self._access)
        return Connection(settings, rules, engine, source, version, active and settings.enabled)

    async def install(self, conn: Connection) -> None:
        """Start the new engine, put it in force, then stop the one it replaces."""
        if conn.engine is not None:
            await conn.engine.start()
        old = self._by_id.get(conn.id)
        self._by_id[conn.id] = conn
        self._route()
        if old is not None and old.engine is not None and old.engine is not conn.engine:
            await old.engine.stop()

    async def remove(self, conn_id: str) -> Connection | None:
        old = self._by_id.pop(conn_id, None)
        self._route()
        if old is not None and old.engine is not None:
            await old.engine.stop()
        return old

    async def stop(self) -> None:
        for conn_id in list(self._by_id):
            await self.remove(conn_id)
