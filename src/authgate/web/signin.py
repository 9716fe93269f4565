"""The protocol-blind half of signing in and out.

A protocol handler proves who the person is and hands over one `Identity`;
`complete_login` does the rest — policy, user record, roles, a new session,
cookie, audit, metrics, connection status — identically for SAML and OIDC.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from authgate.admission import grants
from authgate.connections import Connection
from authgate.errors import BadRequest, LoginFailed, LoginStateError, PolicyDenied, ProtocolError
from authgate.identity import Identity
from authgate.policy import AccessRules
from authgate.session.login_state import new_browser_id
from authgate.session.sessions import Session
from authgate.users import User
from authgate.web.client_info import CID, CLIENT
from authgate.web.forms import FORM_TYPE, read_form
from authgate.web.gate import current_session
from authgate.web.origin import from_own_page, origin_of
from authgate.web.state import State, state

# `none`: typed, bookmarked or otherwise started by the person, not by a page.
_OWN_NAVIGATION = frozenset({"same-origin", "none"})
MAX_LOGOUT_FORM = 4096


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def connection_login_url(st: State, conn_id: str, kind: str, return_to: str) -> str:
    return st.url(f"/{kind}/{conn_id}/login") + "?" + urlencode({"rd": return_to})


def signing_connection(request: web.Request, kind: str) -> Connection:
    """The connection a protocol endpoint names, as it is in force for this whole request."""
    conn_id = request.match_info["conn_id"]
    conn = state(request).connections.get(conn_id)
    if conn is None or conn.engine is None:
        raise LoginFailed("invalid_request", f"no enabled connection {conn_id!r}")
    if conn.type != kind:
        raise ProtocolError("protocol_mismatch", f"{conn_id} is not a {kind} connection")
    return conn


def open_for_login(conn: Connection) -> None:
    """People sign in only through an active connection (a test sign-in is let through)."""
    if not conn.active:
        raise LoginFailed("invalid_request", f"connection {conn.id!r} is not active")


def pending_login(conn: Connection, /, **data: Any) -> dict[str, Any]:
    """What a pending sign-in remembers of its connection, so it finishes against that version."""
    return {**data, "conn": conn.id, "version": conn.version}


def check_pending(conn: Connection, pending: dict[str, Any]) -> None:
    """A sign-in finishes against the connection version it started with, or not at all."""
    if pending.get("conn") != conn.id:
        raise LoginStateError("state_mismatch", "the response answers another sign-in")
    if pending.get("version", 0) != conn.version:
        raise LoginStateError(
            "connection_changed", "the connection was changed while this sign-in was under way"
        )
    if not pending.get("test"):
        open_for_login(conn)


async def login_page(request: web.Request) -> web.StreamResponse:
    """One button per connection, and home-realm discovery by email domain."""
    st = state(request)
    return_to = st.redirects.safe(request.query.get("rd"))
    connections = [c.settings for c in st.connections.active()]
    email = request.query.get("email", "").strip()
    message = None
    if email:
        domain = email.rsplit("@", 1)[-1].lower()
        owner = next((c for c in connections if domain in c.domains), None)
        if owner is not None:
            return redirect(connection_login_url(st, owner.id, owner.type, return_to))
        message = f"No sign-in method is set up for {domain}. Choose one above."
    elif len(connections) == 1:
        only = connections[0]
        return redirect(connection_login_url(st, only.id, only.type, return_to))
    return st.pages.render(
        "login.html",
        connections=[
            {"name": c.name, "url": connection_login_url(st, c.id, c.type, return_to)}
            for c in connections
        ],
        discovery=any(c.domains for c in connections),
        login_url=st.url("/login"),
        rd=return_to,
        message=message,
    )


async def remember_login(
    request: web.Request, response: web.StreamResponse, data: dict[str, Any], key: str | None = None
) -> str:
    """Store a pending login behind this browser's pre-login cookie; returns its key."""
    st = state(request)
    browser_id = request.cookies.get(st.cookies.login_name) or new_browser_id()
    key = await st.login_state.put(browser_id, data, key)
    st.cookies.set_login(response, browser_id, st.login_state.ttl)
    return key


async def recall_login(request: web.Request, key: str) -> dict[str, Any]:
    """Consume the pending login `key`, which must belong to this browser."""
    st = state(request)
    return await st.login_state.take(key, request.cookies.get(st.cookies.login_name))


def _audit_fields(request: web.Request, identity: Identity | None) -> dict[str, Any]:
    return {
        "ip": request[CLIENT].ip,
        "correlation_id": request[CID],
        "subject": identity.subject if identity else None,
        "email": identity.email if identity else None,
    }


async def record_failure(
    request: web.Request, conn_id: str, exc: LoginFailed, identity: Identity | None = None
) -> None:
    """Audit, count and remember a refused login; the error middleware renders the page."""
    st = state(request)
    st.audit.emit(
        "sso.login.failed",
        connection=conn_id,
        reason=exc.reason,
        detail=exc.detail,
        **_audit_fields(request, identity),
    )
    st.metrics.logins.labels(conn_id, "failure", exc.reason).inc()
    await st.status.failure(conn_id, exc.reason, request[CID])


async def recorded(request: web.Request, exc: LoginFailed) -> LoginFailed:
    """`exc`, recorded against the connection the path names when that connection exists."""
    conn_id = request.match_info["conn_id"]
    if conn_id in state(request).connections:
        await record_failure(request, conn_id, exc)
    return exc


async def login_started(
    request: web.Request,
    response: web.StreamResponse,
    conn: Connection,
    key: str,
    test: bool,
    /,
    **pending: Any,
) -> web.StreamResponse:
    """The pending sign-in behind the browser's pre-login cookie, and its audit event."""
    await remember_login(request, response, pending_login(conn, **pending, test=test), key=key)
    state(request).audit.emit(
        "sso.login.initiated",
        connection=conn.id,
        test=test,
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )
    return response


async def _still_active(
    request: web.Request, conn_id: str, identity: Identity, session: Session
) -> None:
    """A retire that raced this login has either been seen here or will find the new session."""
    st = state(request)
    user = await st.users.get(session.user_id)
    if user is None or not user.active:
        await st.sessions.delete(session)
        exc = PolicyDenied("user_disabled", f"user {session.user_id} was retired during sign-in")
        await record_failure(request, conn_id, exc, identity)
        raise exc


async def finish_login(
    request: web.Request,
    conn: Connection,
    identity: Identity,
    pending: dict[str, Any],
    return_to: str,
) -> web.Response:
    """A proven identity signs in, unless this was an admin's test sign-in: that shows it."""
    if pending.get("test"):
        return await test_result(request, conn, identity, return_to)
    return await complete_login(request, identity, return_to)


async def test_result(
    request: web.Request, conn: Connection, identity: Identity, back_url: str
) -> web.Response:
    """What signing in would forward, or the reason it would be refused; no session is made."""
    st = state(request)
    verdict = await st.admission.preview(conn, identity)
    refusal = verdict.refusal.reason if verdict.refusal else None
    preview = Session(
        user_id=verdict.user.id if verdict.user else "(new user)",
        connection=conn.id,
        subject=identity.subject,
        username=identity.username or identity.email or identity.subject,
        email=identity.email,
        name=identity.name,
        groups=verdict.groups,
        roles=verdict.roles,
        created_at=0,
        last_seen=0,
        expires_at=0,
        organization=conn.settings.organization,
    )
    st.audit.emit(
        "admin.connection.test_signin",
        connection=conn.id,
        outcome=refusal or "admitted",
        subject=identity.subject,
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )
    return st.pages.render(
        "test_signin.html",
        conn=conn,
        identity=identity,
        refusal=refusal,
        headers=st.headers.identity(preview, None),
        back_url=back_url,
    )


async def complete_login(request: web.Request, identity: Identity, return_to: str) -> web.Response:
    st = state(request)
    conn = st.connections.get(identity.connection)
    if conn is None:
        raise LoginFailed("invalid_request", f"unknown connection {identity.connection!r}")
    verdict = await st.admission.sign_in(conn, identity)
    if verdict.refusal is not None:
        await record_failure(request, conn.id, verdict.refusal, identity)
        raise verdict.refusal
    user = verdict.user
    assert user is not None
    previous = await current_session(request)
    if previous is not None:
        await st.sessions.delete(previous)
    session = await st.sessions.create(
        Session(
            user_id=user.id,
            connection=conn.id,
            subject=identity.subject,
            username=identity.username or identity.email or identity.subject,
            email=identity.email,
            name=identity.name,
            groups=verdict.groups,
            roles=verdict.roles,
            created_at=0,
            last_seen=0,
            expires_at=identity.session_not_after or 0,
            protocol_data=identity.protocol_data,
            organization=conn.settings.organization,
            idp_session=identity.idp_session,
            refresh_at=identity.refresh_at,
        )
    )
    await _still_active(request, conn.id, identity, session)
    st.audit.emit(
        "sso.login.success",
        connection=conn.id,
        user_id=user.id,
        roles=list(session.roles),
        **_audit_fields(request, identity),
    )
    st.metrics.logins.labels(conn.id, "success", "").inc()
    await st.status.success(conn.id)
    response = redirect(st.redirects.safe(return_to))
    st.cookies.set_session(response, session.id, session.expires_at - session.created_at)
    return response


async def restamp(st: State, user: User, rules: AccessRules) -> int:
    """Give the user's live sessions the roles they would get now; returns how many."""

    async def regrant(session: Session) -> Session:
        _, roles = await grants(st.users, rules, user, session.groups)
        return replace(session, roles=roles)

    return await st.sessions.restamp_user(user.id, regrant)


async def logout(request: web.Request) -> web.StreamResponse:
    """Local logout always; the protocol may then continue at the IdP (SLO / end-session).

    Signing someone out is a state change a foreign page could trigger with a
    link or a form, so it happens only on a request that provably comes from
    the person: a navigation they typed or made on this origin, a form posted
    from this origin, or the confirmation page's form with its token.
    Anything else is shown the confirmation page, and the session stays.
    """
    st = state(request)
    session = await current_session(request)
    return_to = _return_after_logout(request)
    if session is not None and not await _logout_intended(request, session):
        action = st.url("/logout") + ("?" + urlencode({"rd": return_to}) if return_to else "")
        return st.pages.render(
            "logout_confirm.html",
            logout_url=action,
            token=logout_token(session),
            home_url=st.redirects.safe(None),
        )
    next_url = None
    if session is not None:
        conn = st.connections.get(session.connection)
        return_to = return_to or (conn.settings.post_logout_url if conn is not None else None)
        await st.sessions.delete(session)
        st.audit.emit(
            "session.logout",
            connection=session.connection,
            user_id=session.user_id,
            ip=request[CLIENT].ip,
            correlation_id=request[CID],
        )
        if conn is not None and conn.engine is not None:
            next_url = await conn.engine.logout_url(session, return_to)
    response = signed_out(st, next_url or return_to)
    st.cookies.clear_session(response)
    return response


def _return_after_logout(request: web.Request) -> str | None:
    """`rd` (or the `state` an OIDC provider hands back), when login would accept it too."""
    wanted = request.query.get("rd") or request.query.get("state")
    return state(request).redirects.safe(wanted, "") or None


def signed_out(st: State, return_to: str | None) -> web.Response:
    """After sign-out: to where the person asked (already checked), else the signed-out page."""
    if return_to:
        return redirect(return_to)
    return st.pages.render("signed_out.html", login_url=st.url("/login"))


def logout_token(session: Session) -> str:
    """The confirmation form's token: only a page that knows the session id can make it."""
    return hashlib.sha256(b"authgate sign-out\0" + session.id.encode()).hexdigest()


async def _logout_intended(request: web.Request, session: Session) -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if request.method == "GET":
        return site in _OWN_NAVIGATION
    origin = origin_of(state(request).settings.public_url)
    if site == "same-origin" or (origin is not None and from_own_page(request.headers, origin)):
        return True
    if request.content_type != FORM_TYPE:
        return False
    form = await read_form(request, MAX_LOGOUT_FORM, BadRequest)
    return hmac.compare_digest(form.get("token", ""), logout_token(session))
