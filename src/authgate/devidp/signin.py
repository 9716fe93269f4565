"""The development IdP's one sign-in page, shared by OIDC and SAML, and its answer.

Signing in with a test user's password (or continuing the IdP's own session)
completes whichever protocol parked the pending sign-in; cancelling answers
with the protocol's refusal, so the application shows an `idp_error`. The
page lists, and the IdP accepts, only the users offered to that protocol
(see `users.py`).
"""

from __future__ import annotations

import secrets

from aiohttp import web

from authgate.devidp.oidc import AuthorizationRequest
from authgate.devidp.pages import log
from authgate.devidp.saml import SpSession
from authgate.devidp.state import (
    SESSION_COOKIE,
    SESSION_TTL,
    DevIdp,
    Pending,
    SsoSession,
    blocking,
    idp_of,
    now,
    read_form,
    redirect,
    sso_session,
)
from authgate.devidp.users import PROTOCOL_NAMES, DevUser, authenticate, find, offered_to


async def index(request: web.Request) -> web.Response:
    """The IdP's front page; its registration forms need the browser to send our `Origin`,
    which it does for same-origin POSTs only under a `same-origin` referrer policy."""
    idp = idp_of(request)
    response = idp.pages.render(
        "index.html",
        issuer=idp.oidc.issuer,
        discovery=idp.oidc.issuer + "/.well-known/openid-configuration",
        saml_metadata=idp.saml.entity_id,
        users=idp.config.users,
        protocol_names=PROTOCOL_NAMES,
        form_token=idp.form_token,
    )
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _login_page(
    request: web.Request, txn: str, pending: Pending, error: str | None = None, chosen: str = ""
) -> web.Response:
    idp = idp_of(request)
    session = None if pending.force_login else sso_session(request)
    return idp.pages.render(
        "login.html",
        status=401 if error else 200,
        action="/login",
        txn=txn,
        client=pending.client,
        protocol="OpenID Connect" if pending.kind == "oidc" else "SAML 2.0",
        users=offered_to(pending.kind, idp.config.users),
        current=_continuing(idp, session, pending),
        chosen=chosen,
        error=error,
    )


async def login_form(request: web.Request) -> web.Response:
    txn = request.query.get("txn", "")
    pending = idp_of(request).pending.get(txn)
    if pending is None:
        return expired(request)
    return _login_page(request, txn, pending)


def expired(request: web.Request) -> web.Response:
    return idp_of(request).pages.message(
        "Sign-in expired",
        "This sign-in is unknown or took longer than ten minutes. Go back to the application"
        " and start again.",
        status=400,
    )


async def login_submit(request: web.Request) -> web.StreamResponse:
    """Sign in (or continue the IdP session, or cancel), then answer the waiting protocol."""
    idp = idp_of(request)
    form = await read_form(request)
    txn = form.get("txn", "")
    pending = idp.pending.get(txn)
    if pending is None:
        return expired(request)
    if "cancel" in form:
        idp.pending.discard(txn)
        log.info("sign-in cancelled for %s", pending.client)
        return await _cancelled(request, pending)
    session = sso_session(request)
    user = None
    if "continue" in form and session is not None and not pending.force_login:
        user, auth_time = _continuing(idp, session, pending), session.auth_time
    if user is None:
        email = form.get("email", "")
        offered = offered_to(pending.kind, idp.config.users)
        user, auth_time = authenticate(email, form.get("password", ""), offered), now()
        if user is None:
            log.warning("wrong email or password for %r", email[:100])
            return _login_page(request, txn, pending, _refusal(idp, email, pending), email)
    idp.pending.discard(txn)
    log.info("%s signed in for %s (%s)", user.email, pending.client, pending.kind)
    response, sp_session = await _answer(request, pending, user, auth_time)
    sid = request.cookies.get(SESSION_COOKIE, "")
    if session is None or session.user_id != user.id or session.auth_time != auth_time:
        sid = secrets.token_urlsafe(32)
        idp.sessions.put(sid, SsoSession(user.id, auth_time), SESSION_TTL)
        response.set_cookie(SESSION_COOKIE, sid, path="/", httponly=True, samesite="Lax")
    if sp_session is not None:
        idp.joined(sid, sp_session)
    return response


def _refusal(idp: DevIdp, email: str, pending: Pending) -> str:
    """Why the sign-in failed; a test user of the other protocol is told which button to use."""
    known = find(email, idp.config.users)
    if known is None or pending.kind in known.protocols:
        return "Wrong email or password."
    other = " or ".join(PROTOCOL_NAMES[p] for p in known.protocols)
    return f"{known.email} signs in with {other}: go back and use that button."


def _continuing(idp: DevIdp, session: SsoSession | None, pending: Pending) -> DevUser | None:
    """The IdP session's user, if this protocol may have them (else they sign in afresh)."""
    user = idp.user(session.user_id) if session is not None else None
    return user if user is not None and pending.kind in user.protocols else None


async def _answer(
    request: web.Request, pending: Pending, user: DevUser, auth_time: int
) -> tuple[web.Response, SpSession | None]:
    """The protocol's answer, and the SAML SP session it starts (for a later logout)."""
    idp = idp_of(request)
    if isinstance(pending.request, AuthorizationRequest):
        return redirect(idp.oidc.issue_code(pending.request, user, auth_time)), None
    form = await blocking(idp.saml.login_response, pending.request, user)
    what = "SAML artifact" if "SAMLart" in form.fields else "signed SAML response"
    return idp.pages.auto_post(form.url, form.fields, what), form.session


async def _cancelled(request: web.Request, pending: Pending) -> web.Response:
    idp = idp_of(request)
    if isinstance(pending.request, AuthorizationRequest):
        req = pending.request
        return redirect(
            idp.oidc.error_redirect(
                req.redirect_uri, req.state, "access_denied", "the person cancelled the sign-in"
            )
        )
    form = await blocking(idp.saml.cancelled_response, pending.request)
    return idp.pages.auto_post(form.url, form.fields, "SAML response")
