"""SAML endpoints: SP metadata, login (AuthnRequest), ACS and single logout.

Handlers only move data between HTTP and the protocol engine. The
AuthnRequest id is the key of the pending login behind the browser's
pre-login cookie, so an ACS post is accepted once, from the browser that
started it. Every refused login is recorded (audit, metric, connection
status) before the error middleware renders it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from markupsafe import Markup

from authgate.connections import Connection
from authgate.errors import LoginFailed, LoginStateError, ProtocolError
from authgate.protocols.saml import Outgoing, SamlProtocol
from authgate.protocols.saml_logout import (
    IncomingMessage,
    LogoutRequestData,
    post_message,
    redirect_message,
)
from authgate.protocols.saml_validate import AssertionData
from authgate.web.client_info import CID, CLIENT
from authgate.web.forms import read_body, read_form
from authgate.web.signin import (
    check_pending,
    finish_login,
    login_started,
    open_for_login,
    recall_login,
    recorded,
    redirect,
    signed_out,
    signing_connection,
)
from authgate.web.state import State, state

OIDC_PARAMETERS = ("code", "state", "id_token")
AUTO_SUBMIT = 'document.getElementById("saml-post").submit();'
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(AUTO_SUBMIT.encode()).digest()).decode()
METADATA_TYPE = "application/samlmetadata+xml"
SOAP_TYPE = "text/xml"


def _protocol(request: web.Request) -> tuple[Connection, SamlProtocol]:
    conn = signing_connection(request, "saml")
    assert isinstance(conn.engine, SamlProtocol)
    return conn, conn.engine


def _refuse_oidc(params: Mapping[str, str]) -> None:
    if any(name in params for name in OIDC_PARAMETERS):
        raise ProtocolError(
            "protocol_mismatch", "OpenID Connect parameters reached a SAML endpoint"
        )


def _form_limit(protocol: SamlProtocol) -> int:
    """Room for the base64 message (4/3 of the XML limit) plus RelayState and encoding."""
    return protocol.conn.max_response_size * 2


def _send(st: State, outgoing: Outgoing) -> web.Response:
    if outgoing.fields is None:
        return redirect(outgoing.url)
    response = st.pages.render(
        "saml_post.html",
        url=outgoing.url,
        fields=sorted(outgoing.fields.items()),
        script=Markup(AUTO_SUBMIT),  # noqa: S704 - a constant, hashed into the CSP below
    )
    policy = response.headers["Content-Security-Policy"]
    response.headers["Content-Security-Policy"] = f"{policy}; script-src 'sha256-{_SCRIPT_HASH}'"
    return response


async def metadata(request: web.Request) -> web.StreamResponse:
    try:
        _, protocol = _protocol(request)
    except LoginFailed:
        raise web.HTTPNotFound() from None
    return web.Response(
        body=await protocol.sp_metadata(),
        content_type=METADATA_TYPE,
        headers={"Cache-Control": "public, max-age=300"},
    )


async def login(request: web.Request) -> web.StreamResponse:
    st = state(request)
    return_to = st.redirects.safe(request.query.get("rd"))
    try:
        _refuse_oidc(request.query)
        conn, _ = _protocol(request)
        open_for_login(conn)
        return await start_login(request, conn, return_to)
    except LoginFailed as exc:
        raise await recorded(request, exc) from None


async def start_login(
    request: web.Request, conn: Connection, return_to: str, test: bool = False
) -> web.StreamResponse:
    """Send the browser to the IdP with an AuthnRequest; `test`: the admin's test sign-in."""
    st = state(request)
    assert isinstance(conn.engine, SamlProtocol)
    start = await conn.engine.begin_login(return_to)
    response = _send(st, start.outgoing)
    return await login_started(
        request, response, conn, start.request_id, test, idp=start.idp, rd=return_to
    )


async def acs(request: web.Request) -> web.StreamResponse:
    """Assertion Consumer Service: a POSTed SAMLResponse, or a SAMLart (HTTP-Artifact, POSTed
    or in the query) resolved at the IdP; then consume the pending login and sign in."""
    st = state(request)
    try:
        _refuse_oidc(request.query)
        conn, protocol = _protocol(request)
        if request.method == "POST":
            form = await read_form(request, _form_limit(protocol))
        else:
            form = dict(request.query)
        _refuse_oidc(form)
        data = await _consume(request, protocol, form)
        pending: dict[str, Any] = {}
        if data.in_response_to is None:
            open_for_login(conn)
            protocol.check_unsolicited(data)
            return_to = st.redirects.safe(form.get("RelayState"))
        else:
            pending = await recall_login(request, data.in_response_to)
            check_pending(conn, pending)
            if pending.get("idp") != data.issuer:
                raise LoginStateError("state_mismatch", "the response answers another sign-in")
            return_to = st.redirects.safe(pending.get("rd"))
        identity = protocol.identity(data)
    except LoginFailed as exc:
        raise await recorded(request, exc) from None
    return await finish_login(request, conn, identity, pending, return_to)


async def _consume(
    request: web.Request, protocol: SamlProtocol, form: Mapping[str, str]
) -> AssertionData:
    """The validated assertion of a SAMLResponse (POST only) or of a SAMLart."""
    if "SAMLart" in form and "SAMLResponse" not in form:
        _has_pending_login(request, protocol)
        return await protocol.consume_artifact(form["SAMLart"], path=request.path)
    if request.method != "POST":
        raise ProtocolError("invalid_request", "the ACS takes a SAMLResponse by HTTP-POST only")
    if "SAMLResponse" not in form or "SAMLart" in form:
        raise ProtocolError("invalid_request", "the ACS received no SAMLResponse or SAMLart")
    return await protocol.consume_response(form["SAMLResponse"], path=request.path)


def _has_pending_login(request: web.Request, protocol: SamlProtocol) -> None:
    """Resolving an artifact costs a signature and a call to the IdP: without a pre-login
    cookie (and with IdP-initiated sign-in off) no sign-in can come of it, so none is made."""
    st = state(request)
    if not protocol.conn.allow_idp_initiated and not request.cookies.get(st.cookies.login_name):
        raise LoginStateError("state_mismatch", "a SAMLart without a sign-in under way")


async def _incoming(request: web.Request, protocol: SamlProtocol) -> IncomingMessage | None:
    if request.method == "POST":
        form = await read_form(request, _form_limit(protocol))
        _refuse_oidc(form)
        kind = next((k for k in ("SAMLRequest", "SAMLResponse") if k in form), None)
        return post_message(form, kind) if kind else None
    kind = next((k for k in ("SAMLRequest", "SAMLResponse") if k in request.query), None)
    return redirect_message(request.raw_path.partition("?")[2], kind) if kind else None


async def slo(request: web.Request) -> web.StreamResponse:
    """Single logout: the IdP's LogoutRequest, its LogoutResponse, or our own POST to send."""
    st = state(request)
    try:
        _refuse_oidc(request.query)
        _, protocol = _protocol(request)
        if request.method == "GET" and "send" in request.query:
            outgoing = await protocol.pending_logout_form(request.query["send"])
            if outgoing is None:
                raise LoginStateError("state_expired", "no pending logout to send")
            return _send(st, outgoing)
        message = await _incoming(request, protocol)
        if message is None:
            raise ProtocolError("invalid_request", "no SAMLRequest or SAMLResponse")
        if message.kind == "SAMLRequest":
            return await _idp_logout(request, protocol, message)
        result = await protocol.logout_response(message)
    except LoginFailed as exc:
        _audit_logout_failure(request, exc)
        raise
    if not result.success:
        _audit_logout_failure(request, ProtocolError("idp_error", f"IdP answered {result.status}"))
    relay = st.redirects.safe(message.relay_state, "")
    response = signed_out(st, relay or protocol.conn.post_logout_url)
    st.cookies.clear_session(response)
    return response


async def _idp_logout(
    request: web.Request, protocol: SamlProtocol, message: IncomingMessage
) -> web.StreamResponse:
    """Federated sign-out through the browser (front-channel), then answer the IdP."""
    st = state(request)
    data, reply = await protocol.logout_request(message)
    await _end_sessions(request, protocol, data, "front")
    if reply is None:
        response = st.pages.render("signed_out.html", login_url=st.url("/login"))
    else:
        response = _send(st, reply)
    st.cookies.clear_session(response)
    return response


async def slo_soap(request: web.Request) -> web.StreamResponse:
    """Back-channel single logout (SOAP binding): the IdP's server posts a signed
    LogoutRequest, no browser involved, and gets our LogoutResponse in the SOAP answer."""
    try:
        _, protocol = _protocol(request)
        body = await read_body(request, _form_limit(protocol), SOAP_TYPE)
        data, envelope = await protocol.soap_logout_request(body)
    except LoginFailed as exc:
        _audit_logout_failure(request, exc)
        raise
    await _end_sessions(request, protocol, data, "back")
    return web.Response(
        body=envelope, content_type=SOAP_TYPE, headers={"Cache-Control": "no-store"}
    )


async def _end_sessions(
    request: web.Request, protocol: SamlProtocol, data: LogoutRequestData, channel: str
) -> None:
    """End, on every replica, the sessions the LogoutRequest's SessionIndex values name, or,
    when it names none, all of the NameID's sessions at this connection (never those the
    person holds through another connection). Sessions are found by NameID, not through the
    user record, which a match key other than the NameID links by another value."""
    st = state(request)
    conn_id = protocol.conn.id
    if data.session_indexes:
        ended = await st.sessions.revoke_idp_sessions(conn_id, data.name_id, data.session_indexes)
    else:
        ended = await st.sessions.revoke_subject(conn_id, data.name_id)
    st.audit.emit(
        "session.logout",
        connection=conn_id,
        user_id=ended[0].user_id if ended else None,
        subject=data.name_id,
        initiated_by="idp",
        channel=channel,
        session_indexes=len(data.session_indexes),
        sessions=len(ended),
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )


def _audit_logout_failure(request: web.Request, exc: LoginFailed) -> None:
    state(request).audit.emit(
        "sso.logout.failed",
        connection=request.match_info["conn_id"],
        reason=exc.reason,
        detail=exc.detail,
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )


def routes(prefix: str) -> list[web.RouteDef]:
    base = prefix + "/saml/{conn_id}"
    return [
        web.get(base + "/metadata", metadata),
        web.get(base + "/login", login, allow_head=False),
        web.post(base + "/acs", acs),
        web.get(base + "/acs", acs, allow_head=False),
        web.get(base + "/slo", slo, allow_head=False),
        web.post(base + "/slo", slo),
        web.post(base + "/slo/soap", slo_soap),
    ]
