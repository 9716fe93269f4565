"""The development IdP as an aiohttp application: one sign-in page for both protocols.

An OIDC authorization request or a SAML AuthnRequest is checked, parked as a
pending sign-in (in memory, ten minutes) and the browser is sent to the
sign-in page. Signing in there (or continuing the IdP's own session, which
single logout and end-session end) completes whichever protocol started it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiohttp import web

from authgate.devidp.oidc import (
    AuthorizationRequest,
    ClientError,
    OAuthError,
    OidcClient,
    OidcProvider,
)
from authgate.devidp.pages import MARK, Pages, log
from authgate.devidp.saml import SamlIdp, SamlLogin, SamlRequestError
from authgate.devidp.store import ExpiringMap
from authgate.devidp.users import USERS, DevUser, authenticate, by_id

T = TypeVar("T")
PENDING_TTL = 600.0
SESSION_TTL = 8 * 3600.0
SESSION_COOKIE = "devidp_session"
MAX_FORM = 512 * 1024


class NotLoopback(ValueError):
    """The development IdP was asked to listen where others could reach it."""


def require_loopback(host: str, force: bool = False) -> None:
    """Refuse any bind address but loopback: this IdP signs anyone in with a public password."""
    if force:
        log.warning(
            "listening on %s because --force was given: anyone who can reach it can sign in"
            " as any test user",
            host,
        )
        return
    name = host.strip("[]")
    if name == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotLoopback(
            f"the development IdP refuses to listen on {host!r}: only a loopback address"
            " (127.0.0.1, ::1, localhost) is allowed, because its users and password are public"
            " (pass --force to override)"
        )


@dataclass(frozen=True, slots=True)
class DevIdpConfig:
    """`base_url` is where browsers and authgate reach the IdP (its issuer is base_url/oidc)."""

    base_url: str
    clients: tuple[OidcClient, ...] = ()
    service_providers: tuple[bytes, ...] = ()
    require_signed_requests: bool = True
    users: tuple[DevUser, ...] = USERS


@dataclass(frozen=True, slots=True)
class Pending:
    kind: Literal["oidc", "saml"]
    request: AuthorizationRequest | SamlLogin
    client: str
    force_login: bool


@dataclass(frozen=True, slots=True)
class SsoSession:
    user_id: str
    auth_time: int


@dataclass
class DevIdp:
    """Everything the handlers share; keys and temporary files are made once at creation."""

    config: DevIdpConfig
    oidc: OidcProvider
    saml: SamlIdp
    pages: Pages = field(default_factory=Pages)
    pending: ExpiringMap[Pending] = field(default_factory=ExpiringMap)
    sessions: ExpiringMap[SsoSession] = field(default_factory=ExpiringMap)

    @classmethod
    def create(cls, config: DevIdpConfig, key_dir: Path) -> DevIdp:
        """Blocking (key generation, xmlsec1 probe): call it before the event loop is busy."""
        saml = SamlIdp(
            config.base_url, key_dir, config.service_providers, config.require_signed_requests
        )
        oidc = OidcProvider(config.base_url + "/oidc", config.clients)
        return cls(config=config, oidc=oidc, saml=saml)

    def user(self, user_id: str) -> DevUser | None:
        return by_id(user_id, self.config.users)


IDP: web.AppKey[DevIdp] = web.AppKey("devidp", DevIdp)


def _idp(request: web.Request) -> DevIdp:
    return request.app[IDP]


async def _blocking(func: Callable[..., T], *args: Any) -> T:
    """pysaml2 runs xmlsec1 synchronously: keep it off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, partial(func, *args))


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _json(data: dict[str, Any], status: int = 200, **headers: str) -> web.Response:
    response = web.json_response(data, status=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers)
    return response


def _session(request: web.Request) -> SsoSession | None:
    sid = request.cookies.get(SESSION_COOKIE)
    return _idp(request).sessions.get(sid) if sid else None


def _end_session(request: web.Request, response: web.StreamResponse) -> None:
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        _idp(request).sessions.discard(sid)
    response.del_cookie(SESSION_COOKIE, path="/")


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM, actual_size=request.content_length)
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}


async def index(request: web.Request) -> web.Response:
    idp = _idp(request)
    return idp.pages.render(
        "index.html",
        issuer=idp.oidc.issuer,
        discovery=idp.oidc.issuer + "/.well-known/openid-configuration",
        saml_metadata=idp.saml.entity_id,
        users=idp.config.users,
    )


def _park(request: web.Request, pending: Pending) -> web.Response:
    txn = secrets.token_urlsafe(24)
    _idp(request).pending.put(txn, pending, PENDING_TTL)
    return _redirect(f"/login?txn={txn}")


def _login_page(
    request: web.Request, txn: str, pending: Pending, error: str | None = None, chosen: str = ""
) -> web.Response:
    idp = _idp(request)
    session = None if pending.force_login else _session(request)
    current = idp.user(session.user_id) if session else None
    return idp.pages.render(
        "login.html",
        status=401 if error else 200,
        action="/login",
        txn=txn,
        client=pending.client,
        client_id=pending.client,
        protocol="OpenID Connect" if pending.kind == "oidc" else "SAML 2.0",
        users=idp.config.users,
        current=current,
        chosen=chosen,
        error=error,
    )


async def login_form(request: web.Request) -> web.Response:
    txn = request.query.get("txn", "")
    pending = _idp(request).pending.get(txn)
    if pending is None:
        return _expired(request)
    return _login_page(request, txn, pending)


def _expired(request: web.Request) -> web.Response:
    return _idp(request).pages.message(
        "Sign-in expired",
        "This sign-in is unknown or took longer than ten minutes. Go back to the application"
        " and start again.",
        status=400,
    )


async def login_submit(request: web.Request) -> web.StreamResponse:
    """Sign in (or continue the IdP session, or cancel), then answer the waiting protocol."""
    idp = _idp(request)
    form = await _form(request)
    txn = form.get("txn", "")
    pending = idp.pending.get(txn)
    if pending is None:
        return _expired(request)
    if "cancel" in form:
        idp.pending.discard(txn)
        log.info("sign-in cancelled for %s", pending.client)
        return await _cancelled(request, pending)
    session = _session(request)
    if "continue" in form and session is not None and not pending.force_login:
        user = idp.user(session.user_id)
        auth_time = session.auth_time
    else:
        user = authenticate(form.get("email", ""), form.get("password", ""), idp.config.users)
        auth_time = int(time.time())
        if user is None:
            log.warning("wrong email or password for %r", form.get("email", "")[:100])
            return _login_page(
                request, txn, pending, "Wrong email or password.", form.get("email", "")
            )
    if user is None:
        return _login_page(request, txn, pending, "Choose a test user.")
    idp.pending.discard(txn)
    log.info("%s signed in for %s (%s)", user.email, pending.client, pending.kind)
    response = await _answer(request, pending, user, auth_time)
    if session is None or session.user_id != user.id or session.auth_time != auth_time:
        sid = secrets.token_urlsafe(32)
        idp.sessions.put(sid, SsoSession(user.id, auth_time), SESSION_TTL)
        response.set_cookie(SESSION_COOKIE, sid, path="/", httponly=True, samesite="Lax")
    return response


async def _answer(
    request: web.Request, pending: Pending, user: DevUser, auth_time: int
) -> web.Response:
    idp = _idp(request)
    if isinstance(pending.request, AuthorizationRequest):
        return _redirect(idp.oidc.issue_code(pending.request, user, auth_time))
    form = await _blocking(idp.saml.login_response, pending.request, user)
    return idp.pages.auto_post(form.url, form.fields, "signed SAML response")


async def _cancelled(request: web.Request, pending: Pending) -> web.Response:
    idp = _idp(request)
    if isinstance(pending.request, AuthorizationRequest):
        req = pending.request
        return _redirect(
            idp.oidc.error_redirect(
                req.redirect_uri, req.state, "access_denied", "the person cancelled the sign-in"
            )
        )
    form = await _blocking(idp.saml.cancelled_response, pending.request)
    return idp.pages.auto_post(form.url, form.fields, "SAML response")


async def discovery(request: web.Request) -> web.Response:
    return _json(_idp(request).oidc.discovery())


async def jwks(request: web.Request) -> web.Response:
    return _json(_idp(request).oidc.jwks())


async def authorize(request: web.Request) -> web.Response:
    idp = _idp(request)
    params = dict(request.query)
    try:
        auth = idp.oidc.authorization_request(params)
    except ClientError as exc:
        log.warning("authorization request refused: %s", exc)
        return idp.pages.message("Invalid sign-in request", exc.description, status=400)
    except OAuthError as exc:
        log.warning("authorization request refused: %s", exc)
        redirect = idp.oidc.error_redirect(
            params["redirect_uri"], params.get("state"), exc.error, exc.description
        )
        return _redirect(redirect)
    if auth.prompt == "none":
        session = _session(request)
        user = idp.user(session.user_id) if session else None
        if session is None or user is None:
            return _redirect(
                idp.oidc.error_redirect(
                    auth.redirect_uri, auth.state, "login_required", "no session at the IdP"
                )
            )
        return _redirect(idp.oidc.issue_code(auth, user, session.auth_time))
    return _park(request, Pending("oidc", auth, auth.client_id, auth.prompt == "login"))


async def token(request: web.Request) -> web.Response:
    idp = _idp(request)
    try:
        answer = idp.oidc.token(await _form(request), request.headers.get("Authorization"))
    except OAuthError as exc:
        log.warning("token request refused: %s", exc)
        extra = {"WWW-Authenticate": 'Basic realm="devidp"'} if exc.status == 401 else {}
        body = {"error": exc.error, "error_description": exc.description}
        return _json(body, exc.status, **extra)
    return _json(answer)


async def userinfo(request: web.Request) -> web.Response:
    try:
        return _json(_idp(request).oidc.userinfo(request.headers.get("Authorization")))
    except OAuthError as exc:
        challenge = f'Bearer error="{exc.error}", error_description="{exc.description}"'
        return _json({"error": exc.error}, exc.status, **{"WWW-Authenticate": challenge})


async def end_session(request: web.Request) -> web.Response:
    """RP-initiated logout: end the IdP session, then return to a registered URI only."""
    idp = _idp(request)
    try:
        target = idp.oidc.end_session(dict(request.query))
    except ClientError as exc:
        log.warning("end-session request refused: %s", exc)
        return idp.pages.message("Invalid sign-out request", exc.description, status=400)
    response = _redirect(target) if target else _signed_out(request)
    _end_session(request, response)
    log.info("IdP session ended by end_session")
    return response


def _signed_out(request: web.Request) -> web.Response:
    return _idp(request).pages.message("Signed out", "You are signed out of the development IdP.")


async def saml_metadata(request: web.Request) -> web.Response:
    return web.Response(
        body=_idp(request).saml.metadata(), content_type="application/samlmetadata+xml"
    )


async def _saml_params(request: web.Request) -> tuple[str, dict[str, str]]:
    if request.method == "POST":
        return "post", await _form(request)
    return "redirect", dict(request.query)


async def saml_sso(request: web.Request) -> web.Response:
    idp = _idp(request)
    binding, params = await _saml_params(request)
    if "SAMLRequest" not in params:
        return idp.pages.message("Invalid sign-in request", "No SAMLRequest.", status=400)
    try:
        login = await _blocking(idp.saml.parse_login, binding, params["SAMLRequest"], params)
    except SamlRequestError as exc:
        log.warning("%s", exc)
        return idp.pages.message("Invalid sign-in request", str(exc), status=400)
    return _park(request, Pending("saml", login, login.sp_entity_id, login.force_authn))


async def saml_slo(request: web.Request) -> web.Response:
    """SP-initiated single logout: verify the LogoutRequest, end the session, answer signed."""
    idp = _idp(request)
    binding, params = await _saml_params(request)
    if "SAMLRequest" not in params:
        return idp.pages.message("Invalid sign-out request", "No LogoutRequest.", status=400)
    try:
        logout = await _blocking(idp.saml.parse_logout, binding, params["SAMLRequest"], params)
    except SamlRequestError as exc:
        log.warning("%s", exc)
        return idp.pages.message("Invalid sign-out request", str(exc), status=400)
    reply = logout.reply
    if reply["fields"] is None:
        response = _redirect(reply["url"])
    else:
        response = idp.pages.auto_post(reply["url"], reply["fields"], "SAML logout response")
    _end_session(request, response)
    log.info("IdP session ended by SAML single logout from %s", logout.sp_entity_id)
    return response


@web.middleware
async def marked(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every answer says what it comes from, for anyone reading headers or proxies' logs."""
    response = await handler(request)
    response.headers["X-Development-IdP"] = MARK
    return response


def create_app(idp: DevIdp) -> web.Application:
    app = web.Application(middlewares=[marked], client_max_size=MAX_FORM)
    app[IDP] = idp
    app.router.add_get("/", index)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_get("/oidc/.well-known/openid-configuration", discovery)
    app.router.add_get("/oidc/jwks", jwks)
    app.router.add_get("/oidc/authorize", authorize)
    app.router.add_post("/oidc/token", token)
    app.router.add_route("GET", "/oidc/userinfo", userinfo)
    app.router.add_route("POST", "/oidc/userinfo", userinfo)
    app.router.add_get("/oidc/end_session", end_session)
    app.router.add_get("/saml/metadata", saml_metadata)
    for method in ("GET", "POST"):
        app.router.add_route(method, "/saml/sso", saml_sso)
        app.router.add_route(method, "/saml/slo", saml_slo)
    return app
