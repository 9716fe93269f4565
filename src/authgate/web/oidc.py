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
from authgate.web.client_info import CID, CLIENT
from authgate.web.forms import read_form
from authgate.web.signin import (
    check_pending,
    finish_login,
    open_for_login,
    pending_login,
    recall_login,
    record_failure,
    redirect,
    remember_login,
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


async def _recorded(request: web.Request, exc: LoginFailed) -> LoginFailed:
    conn_id = request.match_info["conn_id"]
    if conn_id in state(request).connections:
        await record_failure(request, conn_id, exc)
    return exc


async def login(request: web.Request) -> web.StreamResponse:
    st = state(request)
    try:
        _refuse_saml(request.query)
        conn, _ = _protocol(request)
        open_for_login(conn)
        return await start_login(request, conn, st.redirects.safe(request.query.get("rd")))
    except LoginFailed as exc:
        raise await _recorded(request, exc) from None


async def start_login(
    request: web.Request, conn: Connection, return_to: str, test: bool = False
) -> web.StreamResponse:
    """Send the browser to the provider; `test`: the admin's test sign-in."""
    st = state(request)
    assert isinstance(conn.engine, OidcProtocol)
    start = await conn.engine.begin_login(return_to)
    response = redirect(start.url)
    pending = pending_login(conn, **start.pending, test=test)
    await remember_login(request, response, pending, key=start.state)
    st.audit.emit(
        "sso.login.initiated",
        connection=conn.id,
        test=test,
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )
    return response


async def callback(request: web.Request) -> web.StreamResponse:
    params = request.query
    try:
        _refuse_saml(params)
        conn, protocol = _protocol(request)
        pending = await recall_login(request, params.get("state", ""))
        check_pending(conn, pending)
        identity = await protocol.finish_login(params, pending)
    except LoginFailed as exc:
        raise await _recorded(request, exc) from None
    return await finish_login(request, conn, identity, pending, pending["rd"])


async def callback_post(request: web.Request) -> web.StreamResponse:
    """Authorization responses arrive by GET; a POST here is a misdirected SAML binding or junk."""
    try:
        _refuse_saml(await read_form(request, MAX_FORM_BYTES))
        _protocol(request)
        raise ProtocolError("invalid_request", "the redirect URI accepts only GET")
    except LoginFailed as exc:
        raise await _recorded(request, exc) from None


def routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(prefix + "/oidc/{conn_id}/login", login, allow_head=False),
        web.get(prefix + "/oidc/{conn_id}/callback", callback, allow_head=False),
        web.post(prefix + "/oidc/{conn_id}/callback", callback_post),
    ]
