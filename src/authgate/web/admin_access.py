"""Who may use the admin endpoints, decided once per request before any handler runs.

Two ways in: a signed-in session whose roles hold the admin role, or the admin
bearer token (compared as SHA-256 digests in constant time, so neither its
length nor its prefix leaks through timing). A browser session is ambient
authority, so every state-changing request made with one must also prove it
comes from our own pages: `Sec-Fetch-Site`, then `Origin`, then `Referer` must
name authgate's public origin. The bearer token is never sent by a browser on
its own, so token calls need no such proof.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from authgate.errors import Forbidden
from authgate.settings import Settings
from authgate.tokens import AdminTokens
from authgate.web.client_info import CID, CLIENT
from authgate.web.gate import challenge, current_session
from authgate.web.origin import from_own_page, origin_of
from authgate.web.state import state

_BEARER = re.compile(r"Bearer +([!-~]+)", re.IGNORECASE)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_CHALLENGE = 'Bearer realm="authgate-admin", error="invalid_token"'


@dataclass(frozen=True, slots=True)
class Actor:
    """The admin behind a request, as written to the audit log."""

    kind: Literal["session", "token"]
    name: str
    user_id: str | None = None
    # An organization admin's organization; None for an admin of everything.
    organization: str | None = None

    def sees(self, organization: str | None) -> bool:
        """Whether this admin may see and change what belongs to `organization`."""
        return self.organization is None or organization == self.organization


class AdminAccess:
    """Settings read once: the admin role, the token digest and authgate's own origin."""

    def __init__(
        self, role: str, token_digest: bytes | None, origin: str, organization_role: str = ""
    ) -> None:
        self.role = role
        self.organization_role = organization_role
        self._token_digest = token_digest
        self.origin = origin

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminAccess:
        cfg = settings.admin
        digest = None
        if cfg.token is not None:
            digest = hashlib.sha256(cfg.token.encode()).digest()
        elif cfg.token_sha256 is not None:
            digest = bytes.fromhex(cfg.token_sha256)
        origin = origin_of(settings.public_url)
        assert origin is not None, "public_url is validated as an absolute http(s) URL"
        return cls(cfg.role, digest, origin, cfg.organization_role)

    def token_matches(self, authorization: str) -> bool:
        """True only for `Bearer <the configured token>`; always false when none is set."""
        match = _BEARER.fullmatch(authorization.strip())
        if self._token_digest is None or match is None:
            return False
        presented = hashlib.sha256(match.group(1).encode()).digest()
        return hmac.compare_digest(presented, self._token_digest)

    def same_origin(self, request: web.Request) -> bool:
        return from_own_page(request.headers, self.origin)


ADMIN: web.AppKey[AdminAccess] = web.AppKey("authgate_admin", AdminAccess)


def _deny(request: web.Request, reason: str, actor: Actor | None = None) -> None:
    state(request).audit.emit(
        "admin.denied",
        reason=reason,
        method=request.method,
        path=request.path,
        actor=actor.name if actor else None,
        actor_user_id=actor.user_id if actor else None,
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )


def _invalid_token(request: web.Request) -> web.Response:
    return web.json_response(
        {"error": "invalid_token", "correlation_id": request[CID]},
        status=401,
        headers={"WWW-Authenticate": ADMIN_CHALLENGE, "Cache-Control": "no-store"},
    )


async def _token_actor(
    request: web.Request, access: AdminAccess, authorization: str
) -> Actor | None:
    """The configured token, or one made by `authgate admin token create` (store failures
    propagate: 503, never a pass)."""
    if access.token_matches(authorization):
        return Actor("token", "admin-token")
    match = _BEARER.fullmatch(authorization.strip())
    if match is None:
        return None
    info = await AdminTokens(state(request).kv).verify(match.group(1))
    return Actor("token", f"admin-token:{info.id}") if info is not None else None


async def authorize(request: web.Request) -> Actor | web.Response:
    """The admin making this request, or the response that refuses it.

    Raises `Forbidden` for a signed-in non-admin and for a cross-origin browser
    write; the error middleware renders those with their reason code.
    """
    access = request.app[ADMIN]
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        actor = await _token_actor(request, access, authorization)
        if actor is None:
            _deny(request, "invalid_token")
            return _invalid_token(request)
        return actor
    session = await current_session(request)
    if session is None:
        return challenge(request, request.path_qs)
    actor = Actor("session", session.username, session.user_id)
    if access.role not in session.roles:
        if access.organization_role in session.roles and session.organization:
            actor = Actor("session", session.username, session.user_id, session.organization)
        else:
            _deny(request, "admin_role_required", actor)
            raise Forbidden("admin_role_required", f"{session.username} lacks role {access.role}")
    if request.method not in SAFE_METHODS and not access.same_origin(request):
        _deny(request, "cross_origin_request", actor)
        raise Forbidden("cross_origin_request", "admin write without a same-origin Origin")
    return actor


def audit_admin(request: web.Request, actor: Actor, event: str, **fields: Any) -> None:
    """An `admin.*` event: who (name, kind, user), from where, and what."""
    state(request).audit.emit(
        event,
        actor=actor.name,
        actor_kind=actor.kind,
        actor_user_id=actor.user_id,
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
        **fields,
    )
