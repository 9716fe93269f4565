"""Endpoints at the paths a vendor document fixes (`/saml/acs`, `/redirect_uri`, ...).

They can be anywhere, change with the connections at runtime, and must win
over the application (which would otherwise receive the IdP's POST), so they
are looked up before the catch-all routes rather than registered as routes.
The handlers are the usual ones; the connection comes from the path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from authgate.web import oidc, saml
from authgate.web.state import state

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ENDPOINTS: dict[str, dict[str, Handler]] = {
    "acs": {"POST": saml.acs, "GET": saml.acs},
    "slo": {"GET": saml.slo, "POST": saml.slo},
    "metadata": {"GET": saml.metadata},
    "callback": {"GET": oidc.callback, "POST": oidc.callback_post},
}


def before(fallback: Handler) -> Handler:
    """`fallback` (the proxy, the prefix's 404), unless a connection answers at this path."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        found = state(request).connections.owner(request.path)
        if found is None:
            return await fallback(request)
        conn, endpoint = found
        handler = ENDPOINTS[endpoint].get(request.method)
        if handler is None:
            raise web.HTTPMethodNotAllowed(request.method, sorted(ENDPOINTS[endpoint]))
        request.match_info["conn_id"] = conn.id
        return await handler(request)

    return dispatch
