"""The aiohttp front's side of the request path: cookie -> session, and a `Decision` answered."""

from __future__ import annotations

import time

from aiohttp import web

from authgate.session.sessions import Session
from authgate.web.client_info import CID, CLIENT
from authgate.web.decision import Decision, Endpoint, Facts, decide, facts, sign_in_required
from authgate.web.middlewares import refusal, wants_html
from authgate.web.session_refresh import refresh_if_due
from authgate.web.state import State, state


async def current_session(request: web.Request) -> Session | None:
    """The valid session behind the cookie; store failures propagate (fail closed)."""
    st = state(request)
    sid = request.cookies.get(st.cookies.session_name)
    if not sid:
        return None
    session = await lookup(st, sid)
    if session is not None and session.refresh_due(time.time()):
        session = await refresh_if_due(request, session)
    return session


async def lookup(st: State, sid: str) -> Session | None:
    """The session from this process's cache, else from the store (both fronts ask here)."""
    return st.sessions.cached(sid) or await from_store(st, sid)


async def from_store(st: State, sid: str) -> Session | None:
    """The session as the store has it now (a timed round trip), remembered by the cache."""
    started = time.perf_counter()
    session = await st.sessions.load(sid)
    st.metrics.store_latency.observe(time.perf_counter() - started)
    return session


def request_facts(request: web.Request, endpoint: Endpoint) -> Facts:
    return facts(
        state(request),
        endpoint,
        request.method,
        request.raw_path,
        request.headers,
        request[CLIENT],
        request[CID],
    )


async def decided(request: web.Request, endpoint: Endpoint) -> Decision:
    """The request's facts, its session if the decision needs one, and the decision (counted)."""
    st = state(request)
    asked = request_facts(request, endpoint)
    session = None if asked.public else await current_session(request)
    decision = decide(st, asked, session)
    st.metrics.count(endpoint.value, decision.reason)
    return decision


def respond(request: web.Request, decision: Decision) -> web.Response:
    """A decision answered here (not forwarded) as aiohttp's response.

    Refusals get the page or JSON every refusal gets; `request_context` adds the request id.
    """
    if decision.status == 401:
        assert decision.login_url is not None
        response = _unauthenticated_body(request, decision.login_url)
    elif decision.status >= 400:
        st, cid = state(request), request[CID]
        response = refusal(st, request.headers, cid, decision.status, decision.reason)
    else:
        response = web.Response(status=decision.status)
    for name, value in decision.headers:
        response.headers[name] = value
    if decision.identity is not None:
        for name, value in decision.identity.pairs:
            response.headers[name] = value
    return response


def challenge(request: web.Request, return_to: str) -> web.Response:
    """Browsers are sent to sign in; API clients get a 401 they can act on."""
    return respond(
        request, sign_in_required(state(request), request.method, request.headers, return_to)
    )


def _unauthenticated_body(request: web.Request, target: str) -> web.Response:
    """A 401's body: a page with a sign-in link, or JSON for APIs."""
    cid = request[CID]
    if wants_html(request):
        return state(request).pages.error(401, "unauthenticated", cid, retry_url=target)
    return web.json_response(
        {"error": "unauthenticated", "login_url": target, "correlation_id": cid}, status=401
    )
