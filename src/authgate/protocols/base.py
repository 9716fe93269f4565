"""What every protocol engine offers to the protocol-blind rest of authgate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import aiohttp

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
