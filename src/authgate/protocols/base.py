"""What every protocol engine offers to the protocol-blind rest of authgate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import aiohttp

from authgate.identity import Identity
from authgate.session.kv import KeyValueStore
from authgate.session.replay import ReplayCache
from authgate.session.sessions import Session
from authgate.settings import Settings


@dataclass(frozen=True)
class ProtocolContext:
    """Shared resources a protocol may use; created once by the app."""

    settings: Settings
    http: aiohttp.ClientSession
    kv: KeyValueStore
    replay: ReplayCache

    def endpoint(self, path: str) -> str:
        """Absolute URL of one of authgate's own endpoints (ACS, redirect URI, ...)."""
        return self.settings.public_url + self.settings.prefix + path

    def absolute(self, url: str) -> str:
        """A configured return URL as the IdP needs it: a local path gets the public origin."""
        return self.settings.public_url + url if url.startswith("/") else url


class RefreshDeferred(Exception):
    """The provider could not be asked now; keep the session and try again later."""


@dataclass(frozen=True, slots=True)
class Refreshed:
    """Renewed claims (None when the provider sent none), the new `protocol_data` and
    when to renew again."""

    identity: Identity | None
    protocol_data: dict[str, Any]
    refresh_at: float | None


class Protocol(ABC):
    """One configured connection. Start-up problems are reported, never fatal."""

    def __init__(self, conn: Any, ctx: ProtocolContext) -> None:
        self.conn = conn
        self.ctx = ctx

    @abstractmethod
    async def start(self) -> None:
        """Load metadata or discovery documents; failures surface in readiness."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop background refreshes."""

    def readiness_problem(self) -> str | None:
        """None when the connection can sign people in, else a short operator-facing reason."""
        return None

    @abstractmethod
    async def logout_url(self, session: Session, return_to: str | None) -> str | None:
        """Where to send the browser after local logout (SLO / end-session), if anywhere;
        `return_to` (already checked) is where it should end up once the IdP is done."""

    @abstractmethod
    async def probe(self) -> list[tuple[bool, str]]:
        """Checks made now against the IdP (metadata or discovery, keys, certificate dates),
        each with whether it passed: for `authgate test` and the admin's test button."""

    async def refresh(self, data: dict[str, Any]) -> Refreshed:
        """Renew a session's claims at the IdP; a protocol without renewal keeps them."""
        return Refreshed(None, data, None)
