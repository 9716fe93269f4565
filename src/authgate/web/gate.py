"""The session step of the request path: cookie -> session, or a challenge."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from aiohttp import web

from authgate.session.sessions import Session
from authgate.web.client_info import CID
from authgate.web.middlewares import REASON_HEADER, wants_html
from authgate.web.session_refresh import refresh_if_due
from authgate.web.state import State, state

CHALLENGE = 'Cookie realm="authgate"'


async def current_session(request: web.Request) -> Session | None:
    """The valid session behind the cookie; store failures propagate (fail closed)."""
    st = state(request)
    sid = request.cookies.get(st.cookies.session_name)
    if not sid:
        return None
    session = st.sessions.cached(sid) or await from_store(st, sid)
    if session is not None and session.refresh_due(time.time()):
        session = await refresh_if_due(request, session)
    return session


async def from_store(st: State, sid: str) -> Session | None:
    """The session as the store has it now (a timed round trip), remembered by the cache."""
    started = time.perf_counter()
    session = await st.sessions.load(sid)
    st.metrics.store_latency.observe(time.perf_counter() - started)
    return session


def login_url(st: State, return_to: str | None) -> str:
    """The sign-in page; the return path is validated here so no caller can forget to."""
    return st.url("/login") + "?" + urlencode({"rd": st.redirects.safe(return_to)})


def should_redirect(request: web.Request, method: str) -> bool:
    """Only a top-level navigation can follow a redirect to a sign-in page and come back."""
    return method in ("GET", "HEAD") and wants_html(request)


def challenge(request: web.Request, return_to: str) -> web.Response:
    """Browsers are sent to sign in; API clients get a 401 they can act on."""
    target = login_url(state(request), return_to)
    if should_redirect(request, request.method):
        return web.Response(status=302, headers={"Location": target, "Cache-Control": "no-store"})
    return unauthenticated(request, target)


def unauthenticated(request: web.Request, target: str, **headers: str) -> web.Response:
    """401 for a caller that is not redirected: a page with a sign-in link, or JSON for APIs."""
    cid = request[CID]
    if wants_html(request):
        response = state(request).pages.error(401, "unauthenticated", cid, retry_url=target)
    else:
        response = web.json_response(
            {"error": "unauthenticated", "login_url": target, "correlation_id": cid}, status=401
        )
    response.headers.update(
        {
            "WWW-Authenticate": CHALLENGE,
            "Cache-Control": "no-store",
            REASON_HEADER: "unauthenticated",
            **headers,
        }
    )
    return response
