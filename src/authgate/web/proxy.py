"""The catch-all on aiohttp's front: decide, strip client identity headers, inject ours, forward."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from authgate.headers import normalise
from authgate.web.client_info import CID
from authgate.web.decision import Action, Decision, Endpoint
from authgate.web.gate import decided, respond
from authgate.web.state import State, state


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


def upstream_headers(
    st: State, incoming: MultiMapping[str], decision: Decision
) -> list[tuple[str, str]]:
    """The client's header lines as the upstream gets them: stripped, then the decision's added.

    The identity headers are not among them: each front sends `decision.identity`
    after these, as rendered lines or as pairs.
    """
    headers = _without_own_cookies(st.headers.kept(incoming, decision.strip), st.cookies.names)
    headers += decision.headers
    return headers


async def handle(request: web.Request) -> web.StreamResponse:
    st = state(request)
    decision = await decided(request, Endpoint.PROXY)
    if decision.action is not Action.FORWARD:
        return respond(request, decision)
    assert st.upstream is not None
    headers = upstream_headers(st, request.headers, decision)
    identity = decision.identity
    if request.headers.get("Upgrade", "").lower() == "websocket":
        pairs = identity.pairs if identity is not None else ()
        return await st.upstream.websocket(request, CIMultiDict([*headers, *pairs]))
    lines = identity.lines if identity is not None else b""
    return await st.upstream.forward(request, headers, request[CID], lines)
