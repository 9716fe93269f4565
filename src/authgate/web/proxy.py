"""The catch-all: authenticate, strip client identity headers, inject ours, forward."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from authgate.session.sessions import Session
from authgate.upstream import origin_form
from authgate.web.client_info import CID, CLIENT, ClientInfo
from authgate.web.gate import challenge, current_session
from authgate.web.state import State, state


def _drop_own_cookies(headers: CIMultiDict[str], names: frozenset[str]) -> None:
    """authgate's cookies are bearer credentials; an app that logs headers must not see them."""
    kept = [
        pair.strip()
        for value in headers.popall("Cookie", ())
        for pair in value.split(";")
        if pair.strip() and pair.split("=", 1)[0].strip() not in names
    ]
    if kept:
        headers["Cookie"] = "; ".join(kept)


def _forward_headers(st: State, request: web.Request, session: Session | None) -> CIMultiDict[str]:
    client: ClientInfo = request[CLIENT]
    headers = st.headers.clean(
        request.headers,
        extra_drop=(
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "Forwarded",
            "X-Request-Id",
        ),
    )
    _drop_own_cookies(headers, st.cookies.names)
    headers["X-Forwarded-For"] = client.forwarded_for
    headers["X-Forwarded-Proto"] = client.proto
    headers["X-Forwarded-Host"] = client.host
    headers["X-Request-Id"] = request[CID]
    if session is not None:
        assertion = st.signer.sign(session) if st.signer else None
        for name, value in st.headers.identity(session, assertion):
            headers[name] = value
    return headers


async def handle(request: web.Request) -> web.StreamResponse:
    st = state(request)
    origin_form(request.raw_path)
    session = None
    if not st.public_paths.match(request.raw_path):
        session = await current_session(request)
        if session is None:
            st.metrics.requests.labels("proxy", "unauthenticated").inc()
            return challenge(request, request.raw_path)
    assert st.upstream is not None
    headers = _forward_headers(st, request, session)
    st.metrics.requests.labels("proxy", "forwarded").inc()
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await st.upstream.websocket(request, headers)
    return await st.upstream.forward(request, headers)
