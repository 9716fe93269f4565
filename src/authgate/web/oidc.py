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

from authgate.errors import LoginFailed, ProtocolError
from authgate.protocols.oidc import OidcProtocol
from authgate.web.client_info import CID, CLIENT
from authgate.web.forms import read_form
from authgate.web.signin import (
    complete_login,
    recall_login,
    record_failure,
    redirect,
    remember_login,
)
from authgate.web.state import state

SAML_PARAMETERS = ("SAMLResponse", "SAMLRequest")
MAX_FORM_BYTES = 256 * 1024


def _protocol(request: web.Request) -> OidcProtocol:
    """The connection's OIDC engine; a SAML connection reached here is a protocol mismatch."""
    st = state(request)
    conn_id = request.match_info["conn_id"]
    conn = st.settings.connection(conn_id)
    if conn is None or not conn.enabled:
        raise LoginFailed("invalid_request", f"no enabled connection {conn_id!r}")
    protocol = st.protocols.get(conn_id)
    if conn.type != "oidc" or not isinstance(protocol, OidcProtocol):
        raise ProtocolError("protocol_mismatch", f"{conn_id} is a {conn.type} connection")
    return protocol


def _refuse_saml(params: Mapping[str, str]) -> None:
    if any(name in params for name in SAML_PARAMETERS):
        raise ProtocolError("protocol_mismatch", "a SAML message reached an OIDC endpoint")


async def _recorded(request: web.Request, exc: LoginFailed) -> LoginFailed:
    conn_id = request.match_info["conn_id"]
    if state(request).settings.connection(conn_id) is not None:
        await record_failure(request, conn_id, exc)
    return exc


async def login(request: web.Request) -> web.StreamResponse:
    st = state(request)
    try:
        _refuse_saml(request.query)
        protocol = _protocol(request)
        start = await protocol.begin_login(st.redirects.safe(request.query.get("rd")))
    except LoginFailed as exc:
        raise await _recorded(request, exc) from None
    response = redirect(start.url)
    await remember_login(request, response, start.pending, key=start.state)
    st.audit.emit(
        "sso.login.initiated",
        connection=protocol.conn.id,
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )
    return response


async def callback(request: web.Request) -> web.StreamResponse:
    params = request.query
    try:
        _refuse_saml(params)
        protocol = _protocol(request)
        pending = await recall_login(request, params.get("state", ""))
        identity = await protocol.finish_login(params, pending)
    except LoginFailed as exc:
        raise await _recorded(request, exc) from None
    return await complete_login(request, identity, pending["rd"])


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
