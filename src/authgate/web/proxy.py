"""The catch-all: authenticate, strip client identity headers, inject ours, forward."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from authgate.headers import normalise
from authgate.session.sessions import Session
from authgate.upstream import origin_form
from authgate.web.client_info import CID, CLIENT, ClientInfo
from authgate.web.gate import challenge, current_session
from authgate.web.state import State, state

# Set by authgate from what it knows, never copied from the client.
REPLACED = frozenset(
    normalise(name)
    for name in (
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Real-IP",
        "Forwarded",
        "X-Request-Id",
    )
)


def _without_own_cookies(
    headers: list[tuple[str, str]], names: frozenset[str]
) -> list[tuple[str, str]]:
    """authgate's cookies are bearer credentials; an app that logs headers must not see them."""
    cookies = [value for name, value in headers if normalise(name) == "cookie"]
    if not cookies:
        return headers
    kept = [
        pair.strip()
        for value in cookies
        for pair in value.split(";")
        if pair.strip() and pair.split("=", 1)[0].strip() not in names
    ]
    headers = [(name, value) for name, value in headers if normalise(name) != "cookie"]
    if kept:
        headers.append(("Cookie", "; ".join(kept)))
    return headers


def forward_headers(
    st: State,
    incoming: MultiMapping[str],
    client: ClientInfo,
    cid: str,
    session: Session | None,
) -> list[tuple[str, str]]:
    """The client's header lines as the upstream gets them: stripped, then ours added."""
    headers = _without_own_cookies(st.headers.kept(incoming, REPLACED), st.cookies.names)
    headers += [
        ("X-Forwarded-For", client.forwarded_for),
        ("X-Forwarded-Proto", client.proto),
        ("X-Forwarded-Host", client.host),
        ("X-Real-IP", client.ip),
        ("X-Request-Id", cid),
    ]
    if session is not None:
        assertion = st.signer.sign(session) if st.signer else None
        headers += st.headers.identity(session, assertion)
    return headers


async def handle(request: web.Request) -> web.StreamResponse:
    st = state(request)
    origin_form(request.raw_path)
    session = None
    if not st.public_paths.match(request.raw_path):
        session = await current_session(request)
        if session is None:
            st.metrics.count("proxy", "unauthenticated")
            return challenge(request, request.raw_path)
    assert st.upstream is not None
    headers = forward_headers(st, request.headers, request[CLIENT], request[CID], session)
    st.metrics.count("proxy", "forwarded")
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await st.upstream.websocket(request, CIMultiDict(headers))
    return await st.upstream.forward(request, headers)
