"""OIDC endpoints: start a login, and the redirect URI the provider sends the browser back to.

The handlers only move data between HTTP and the protocol engine: the login
state goes behind the browser's pre-login cookie (`remember_login`), comes
back once (`recall_login`), and the resulting `Identity` goes to the
protocol-blind `complete_login`. Every refusal is recorded before the error
middleware renders it.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from authgate.connections import Connection
from authgate.errors import LoginFailed, ProtocolError
from authgate.protocols.oidc import OidcProtocol
from authgate.session.sessions import ANY_SUBJECT
from authgate.web.client_info import CID, CLIENT
from authgate.web.forms import read_form
from authgate.web.gate import current_session
from authgate.web.origin import origin_of
from authgate.web.signin import (
    check_pending,
    finish_login,
    login_started,
    open_for_login,
    recall_login,
    recorded,
    redirect,
    signing_connection,
)
from authgate.web.state import state

SAML_PARAMETERS = ("SAMLResponse", "SAMLRequest")
MAX_FORM_BYTES = 256 * 1024


def _protocol(request: web.Request) -> tuple[Connection, OidcProtocol]:
    conn = signing_connection(request, "oidc")
    assert isinstance(conn.engine, OidcProtocol)
    return conn, conn.engine


def _refuse_saml(params: Mapping[str, str]) -> None:
    if any(name in params for name in SAML_PARAMETERS):
        raise ProtocolError("protocol_mismatch", "a SAML message reached an OIDC endpoint")


async def login(request: web.Request) -> web.StreamResponse:
    st = state(request)
    try:
        _refuse_saml(request.query)
        conn, _ = _protocol(request)
        open_for_login(conn)
        return await start_login(request, conn, st.redirects.safe(request.query.get("rd")))
    except LoginFailed as exc:
        raise await recorded(request, exc) from None


async def start_login(
    request: web.Request, conn: Connection, return_to: str, test: bool = False
) -> web.StreamResponse:
    """Send the browser to the provider; `test`: the admin's test sign-in."""
    assert isinstance(conn.engine, OidcProtocol)
    start = await conn.engine.begin_login(return_to)
    return await login_started(
        request, redirect(start.url), conn, start.state, test, **start.pending
    )


async def callback(request: web.Request) -> web.StreamResponse:
    params = request.query
    try:
        _refuse_saml(params)
        conn, protocol = _protocol(request)
        pending = await recall_login(request, params.get("state", ""))
        check_pending(conn, pending)
        identity = await protocol.finish_login(params, pending)
    except LoginFailed as exc:
        raise await recorded(request, exc) from None
    return await finish_login(request, conn, identity, pending, pending["rd"])


async def callback_post(request: web.Request) -> web.StreamResponse:
    """Authorization responses arrive by GET; a POST here is a misdirected SAML binding or junk."""
    try:
        _refuse_saml(await read_form(request, MAX_FORM_BYTES))
        _protocol(request)
        raise ProtocolError("invalid_request", "the redirect URI accepts only GET")
    except LoginFailed as exc:
        raise await recorded(request, exc) from None


async def backchannel_logout(request: web.Request) -> web.StreamResponse:
    """Back-Channel Logout 1.0: the provider ends a sign-in; every replica stops serving it.

    Answered 200 once the sessions are gone, 400 with the reason code for a
    token that is not acted on (§2.8); never cached, never a page.
    """
    st = state(request)
    headers = {"Cache-Control": "no-store"}
    try:
        conn, protocol = _protocol(request)
        form = await read_form(request, MAX_FORM_BYTES)
        logout = await protocol.backchannel_logout(form.get("logout_token", ""))
    except LoginFailed as exc:
        _audit_logout_failure(request, exc)
        body = {"error": exc.reason, "correlation_id": request[CID]}
        return web.json_response(body, status=400, headers=headers)
    if logout.sid is not None:
        subject = logout.sub if logout.sub is not None else ANY_SUBJECT
        ended = await st.sessions.revoke_idp_sessions(conn.id, subject, [logout.sid])
    else:
        assert logout.sub is not None
        ended = await st.sessions.revoke_subject(conn.id, logout.sub)
    st.audit.emit(
        "session.logout",
        connection=conn.id,
        subject=logout.sub,
        initiated_by="idp",
        channel="back",
        sessions=len(ended),
        user_id=ended[0].user_id if ended else None,
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )
    return web.Response(status=200, headers=headers)


async def frontchannel_logout(request: web.Request) -> web.StreamResponse:
    """Front-Channel Logout 1.0: the provider's page loads this in an iframe at sign-out.

    Nothing here is signed, so it ends only this browser's own session, and
    only when `iss` and `sid` name the provider sign-in that session came
    from; any other request leaves everything as it is. The answer is an
    empty page the provider's origin (and only it) may frame.
    """
    st = state(request)
    conn, _ = _protocol(request)
    session = await current_session(request)
    iss, sid = request.query.get("iss"), request.query.get("sid")
    ended = (
        session is not None
        and session.connection == conn.id
        and session.idp_session is not None
        and sid == session.idp_session
        and iss == session.protocol_data.get("iss")
    )
    if ended:
        assert session is not None
        await st.sessions.delete(session)
        st.audit.emit(
            "session.logout",
            connection=conn.id,
            user_id=session.user_id,
            initiated_by="idp",
            channel="front",
            ip=request[CLIENT].ip,
            correlation_id=request[CID],
        )
    response = web.Response(text="", content_type="text/html")
    framer = origin_of(iss) if ended and iss else None
    ancestors = framer or "'none'"
    response.headers["Content-Security-Policy"] = f"default-src 'none'; frame-ancestors {ancestors}"
    response.headers["Cache-Control"] = "no-store"
    if ended:
        st.cookies.clear_session(response)
    return response


def _audit_logout_failure(request: web.Request, exc: LoginFailed) -> None:
    state(request).audit.emit(
        "sso.logout.failed",
        connection=request.match_info["conn_id"],
        reason=exc.reason,
        detail=exc.detail,
        channel="back",
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )


def routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.post(prefix + "/oidc/{conn_id}/backchannel-logout", backchannel_logout),
        web.get(prefix + "/oidc/{conn_id}/frontchannel-logout", frontchannel_logout),
        web.get(prefix + "/oidc/{conn_id}/login", login, allow_head=False),
        web.get(prefix + "/oidc/{conn_id}/callback", callback, allow_head=False),
        web.post(prefix + "/oidc/{conn_id}/callback", callback_post),
    ]
