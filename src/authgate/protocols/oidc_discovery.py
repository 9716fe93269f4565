"""The provider's discovery document: exact issuer match, cached with a TTL.

The connection fetches it in the background from start-up on (and a login
or `authgate test` fetches it when there is no copy yet), so an unreachable
provider can neither block nor fail start-up. A refresh that fails keeps the
last good document; `freshness` tells readiness how old that copy is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from authgate.errors import ProtocolError
from authgate.protocols.freshness import Freshness, grace, span
from authgate.protocols.oidc_http import FetchError, get_object

log = logging.getLogger("authgate.oidc")
RETRY_AFTER_FAILURE = 30.0


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """The parts of the discovery document authgate relies on."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    end_session_endpoint: str | None
    iss_parameter_supported: bool
    # None when the document leaves it out: RFC 8414 §2 then means client_secret_basic.
    auth_methods: tuple[str, ...] | None = None


def discovery_url(issuer: str) -> str:
    """OpenID Connect Discovery 1.0 §4: the issuer without a trailing slash, plus the path."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _endpoint(doc: dict, name: str, required: bool) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    loopback = parts is not None and parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts is None or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise FetchError(f"discovery document: {name} is missing or not an https URL")
    return value


def _auth_methods(doc: dict) -> tuple[str, ...] | None:
    value = doc.get("token_endpoint_auth_methods_supported")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise FetchError("discovery document: token_endpoint_auth_methods_supported is not a list")
    return tuple(value)


def shown(value: object) -> str:
    """A value the provider sent, fit for a log line: short, printable, quoted if odd."""
    if isinstance(value, str) and value.isprintable() and 0 < len(value) <= 200:
        return value
    return repr(value)[:200]


def issuer_difference(configured: str, expected: str, actual: object) -> str:
    """The issuer_mismatch detail; a difference of one trailing slash says which way to fix it.

    `expected` is `configured` itself, or for an Entra multi-tenant issuer its
    `{tenantid}` template, which is what the document must name.
    """
    detail = f"configured {configured}, the provider says {shown(actual)}"
    if expected == f"{actual}/":
        return detail + " — remove the trailing slash"
    if actual == f"{expected}/":
        return detail + " — add the trailing slash"
    return detail


def parse_document(doc: dict, expected_issuer: str, configured: str | None = None) -> ProviderInfo:
    """Validate one discovery document; the issuer must match byte for byte."""
    issuer = doc.get("issuer")
    if issuer != expected_issuer:
        detail = issuer_difference(configured or expected_issuer, expected_issuer, issuer)
        raise ProtocolError("issuer_mismatch", detail)
    try:
        return ProviderInfo(
            issuer=issuer,
            authorization_endpoint=_endpoint(doc, "authorization_endpoint", True) or "",
            token_endpoint=_endpoint(doc, "token_endpoint", True) or "",
            jwks_uri=_endpoint(doc, "jwks_uri", True) or "",
            userinfo_endpoint=_endpoint(doc, "userinfo_endpoint", False),
            end_session_endpoint=_endpoint(doc, "end_session_endpoint", False),
            iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported")
            is True,
            auth_methods=_auth_methods(doc),
        )
    except FetchError as exc:
        raise ProtocolError("metadata_unavailable", str(exc)) from None


class Discovery:
    """One provider's discovery document, shared by every login of the connection."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        issuer: str,
        expected_issuer: str,
        ttl: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self.url = discovery_url(issuer)
        self._configured = issuer
        self._expected = expected_issuer
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._info: ProviderInfo | None = None
        self._fresh_until = 0.0
        self._lock = asyncio.Lock()
        self.freshness = Freshness(
            "discovery document",
            ttl + grace(ttl),
            f"discovery_ttl {span(ttl)} + grace {span(grace(ttl))}",
            clock,
        )

    @property
    def cached(self) -> ProviderInfo | None:
        return self._info

    def due_in(self) -> float:
        """Seconds until the cached document is due for a refresh (or a retry)."""
        return self._fresh_until - self._clock()

    async def get(self) -> ProviderInfo:
        """The current document; a stale copy while the provider is down, else the failure."""
        if self._info is not None and self._clock() < self._fresh_until:
            return self._info
        async with self._lock:
            if self._info is not None and self._clock() < self._fresh_until:
                return self._info
            try:
                self._info = await self._fetch()
                self.freshness.succeeded()
                self._fresh_until = self._clock() + self._ttl
            except ProtocolError as exc:
                if self._info is None:
                    raise
                log.warning("keeping the last good discovery document: %s", exc.detail)
                self._fresh_until = self._clock() + min(self._ttl, RETRY_AFTER_FAILURE)
            return self._info

    async def _fetch(self) -> ProviderInfo:
        try:
            doc = await get_object(self._http, self.url, self._timeout)
        except FetchError as exc:
            self.freshness.failed(exc.kind)
            raise ProtocolError("metadata_unavailable", f"discovery: {exc}") from None
        try:
            return parse_document(doc, self._expected, self._configured)
        except ProtocolError as exc:
            mismatch = exc.reason == "issuer_mismatch"
            self.freshness.failed("issuer_mismatch" if mismatch else "unusable document")
            raise
