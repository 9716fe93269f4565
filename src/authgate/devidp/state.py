"""What the development IdP's handlers share: its settings, keys, pending sign-ins, sessions.

Pending sign-ins (ten minutes) and the IdP's own single-sign-on sessions
(eight hours, behind one cookie), with the SAML SP sessions each one has
started (for "sign out everywhere"), live in memory with deadlines.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
from aiohttp import web

from authgate.devidp.oidc import AuthorizationRequest, OidcClient, OidcProvider
from authgate.devidp.pages import Pages
from authgate.devidp.saml import SamlIdp, SamlLogin, SpOptions, SpSession
from authgate.devidp.store import ExpiringMap
from authgate.devidp.users import USERS, DevUser, by_id

T = TypeVar("T")
PENDING_TTL = 600.0
SESSION_TTL = 8 * 3600.0
SESSION_COOKIE = "devidp_session"
MAX_FORM = 512 * 1024


@dataclass(frozen=True, slots=True)
class DevIdpConfig:
    """`base_url` is where browsers and authgate reach the IdP (its issuer is base_url/oidc);
    `sp_options`: how to answer an SP (encryption), by its entity ID."""

    base_url: str
    clients: tuple[OidcClient, ...] = ()
    service_providers: tuple[bytes, ...] = ()
    require_signed_requests: bool = True
    users: tuple[DevUser, ...] = USERS
    sp_options: dict[str, SpOptions] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pending:
    """A checked request waiting at the sign-in page; `client` is its client_id or SP entity ID."""

    kind: Literal["oidc", "saml"]
    request: AuthorizationRequest | SamlLogin
    client: str
    force_login: bool


@dataclass(frozen=True, slots=True)
class SsoSession:
    """The IdP's own session: continuing it skips the password, as a real IdP's does."""

    user_id: str
    auth_time: int


@dataclass
class DevIdp:
    """Everything the handlers share; keys and temporary files are made once at creation.

    `form_token` is this process's token for the registration forms on its own page.
    """

    config: DevIdpConfig
    oidc: OidcProvider
    saml: SamlIdp
    pages: Pages = field(default_factory=Pages)
    pending: ExpiringMap[Pending] = field(default_factory=ExpiringMap)
    sessions: ExpiringMap[SsoSession] = field(default_factory=ExpiringMap)
    sp_sessions: ExpiringMap[tuple[SpSession, ...]] = field(default_factory=ExpiringMap)
    form_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @classmethod
    def create(cls, config: DevIdpConfig, key_dir: Path) -> DevIdp:
        """Blocking (key generation, xmlsec1 probe): call it before the event loop is busy."""
        saml = SamlIdp(
            config.base_url,
            key_dir,
            config.service_providers,
            config.require_signed_requests,
            config.sp_options,
        )
        oidc = OidcProvider(config.base_url + "/oidc", config.clients)
        return cls(config=config, oidc=oidc, saml=saml)

    def user(self, user_id: str) -> DevUser | None:
        return by_id(user_id, self.config.users)

    def joined(self, sid: str, sp_session: SpSession) -> None:
        """An SP was signed in to within IdP session `sid`: its LogoutRequest will name it."""
        known = self.sp_sessions.get(sid) or ()
        self.sp_sessions.put(sid, (*known, sp_session), SESSION_TTL)


IDP: web.AppKey[DevIdp] = web.AppKey("devidp", DevIdp)
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("devidp_http", aiohttp.ClientSession)


def idp_of(request: web.Request) -> DevIdp:
    return request.app[IDP]


async def blocking(func: Callable[..., T], *args: Any) -> T:
    """pysaml2 runs xmlsec1 synchronously: keep it off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, partial(func, *args))


def now() -> int:
    return int(time.time())


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def json_answer(data: dict[str, Any], status: int = 200, **headers: str) -> web.Response:
    response = web.json_response(data, status=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers)
    return response


def sso_session(request: web.Request) -> SsoSession | None:
    sid = request.cookies.get(SESSION_COOKIE)
    return idp_of(request).sessions.get(sid) if sid else None


def end_sso_session(request: web.Request, response: web.StreamResponse) -> None:
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        idp_of(request).sessions.discard(sid)
        idp_of(request).sp_sessions.discard(sid)
    response.del_cookie(SESSION_COOKIE, path="/")


async def read_form(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM, actual_size=request.content_length)
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}


def park(request: web.Request, pending: Pending) -> web.Response:
    txn = secrets.token_urlsafe(24)
    idp_of(request).pending.put(txn, pending, PENDING_TTL)
    return redirect(f"/login?txn={txn}")
