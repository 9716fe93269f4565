"""The session step of the request path: cookie -> session, or a challenge."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from aiohttp import web

from authgate.session.sessions import Session
from authgate.web.client_info import CID
from authgate.web.middlewares import wants_html
from authgate.web.state import State, state


async def current_session(request: web.Request) -> Session | None:
    """The valid session behind the cookie; store failures propagate (fail closed)."""
    st = state(request)
    sid = request.cookies.get(st.cookies.session_name)
    if not sid:
        return None
    started = time.perf_counter()
    session = await st.sessions.load(sid)
    st.metrics.store_latency.observe(time.perf_counter() - started)
    return session


def login_url(st: State, return_to: str) -> str:
    return st.url("/login") + "?" + urlencode({"rd": return_to})


def challenge(request: web.Request, return_to: str) -> web.Response:
    """Browsers are sent to sign in; API clients get a 401 they can act on."""
    st = state(request)
    target = login_url(st, st.redirects.safe(return_to))
    if wants_html(request) and request.method in ("GET", "HEAD"):
        raise web.HTTPFound(target)
    return web.json_response(
        {"error": "unauthenticated", "login_url": target, "correlation_id": request[CID]},
        status=401,
        headers={"WWW-Authenticate": 'Cookie realm="authgate"', "Cache-Control": "no-store"},
    )
