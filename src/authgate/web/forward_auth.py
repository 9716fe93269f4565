"""Forward-auth for nginx `auth_request`, Traefik and Envoy, plus the identity endpoints.

The front proxy asks "may this request in?" and acts on the status: 200 (copy
the identity headers from the answer), 401 (send the browser to sign in), 403.
It names the original request in headers that only a trusted proxy may set:
from anyone else they could turn a protected path into a public one
(`decision.facts`). The answer itself is `decision.decide`'s, as on the fast path.
"""

from __future__ import annotations

from aiohttp import web

from authgate.errors import Forbidden
from authgate.web.client_info import CLIENT
from authgate.web.decision import (
    NO_STORE,
    Endpoint,
    login_url,
    not_signed_in,
    original_from,
    unauthenticated,
)
from authgate.web.gate import current_session, decided, request_facts, respond
from authgate.web.middlewares import REASON_HEADER
from authgate.web.state import state


async def auth(request: web.Request) -> web.Response:
    return respond(request, await decided(request, Endpoint.AUTH))


async def refused(request: web.Request) -> web.Response:
    """The refusal /auth just gave, rendered for the caller (nginx's `error_page 401 403`).

    nginx cannot show authgate's answer to an `auth_request`, so it copies the
    reason and the request id of that answer into this request. The reason is
    believed only from a trusted proxy and only as one of the two codes /auth
    gives, so no one can make this page say what authgate did not decide; the
    correlation id is the trusted X-Request-Id, like any other.
    """
    if original_from(request[CLIENT], request.headers, REASON_HEADER) == "unauthenticated":
        asked = request_facts(request, Endpoint.AUTH)
        return respond(request, unauthenticated(state(request), asked))
    raise Forbidden(detail="forward-auth refusal shown by the front proxy")


async def userinfo(request: web.Request) -> web.Response:
    session = await current_session(request)
    if session is None:
        return respond(request, not_signed_in(login_url(state(request), None)))
    return web.json_response(
        {
            "user_id": session.user_id,
            "username": session.username,
            "email": session.email,
            "name": session.name,
            "groups": list(session.groups),
            "roles": list(session.roles),
            "connection": session.connection,
            "organization": session.organization,
            "expires_at": int(session.expires_at),
        },
        headers=NO_STORE,
    )


async def jwks(request: web.Request) -> web.Response:
    """Public keys only; cacheable briefly, since a rotation keeps the previous key listed."""
    st = state(request)
    keys = st.signer.jwks() if st.signer is not None else {"keys": []}
    return web.json_response(keys, headers={"Cache-Control": "public, max-age=300"})
