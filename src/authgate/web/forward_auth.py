"""Forward-auth for nginx `auth_request`, Traefik and Envoy, plus the identity endpoints.

The front proxy asks "may this request in?" and acts on the status: 200 (copy
the identity headers from the answer), 401 (send the browser to sign in), 403.
It names the original request in headers that only a trusted proxy may set:
from anyone else they could turn a protected path into a public one.
"""

from __future__ import annotations

from aiohttp import web
from multidict import MultiMapping

from authgate.session.sessions import Session
from authgate.web.client_info import CID, CLIENT, ClientInfo
from authgate.web.gate import CHALLENGE, current_session, login_url, should_redirect
from authgate.web.state import State, state

NO_STORE = {"Cache-Control": "no-store"}
LOGIN_HEADER = "X-Authgate-Login"
REDIRECT_HEADER = "X-Authgate-Redirect"


def original_from(client: ClientInfo, headers: MultiMapping[str], *names: str) -> str | None:
    """A header naming the original request, believed only from a trusted proxy."""
    if not client.via_trusted_proxy:
        return None
    return next((value for name in names if (value := headers.get(name))), None)


def _original(request: web.Request, *names: str) -> str | None:
    return original_from(request[CLIENT], request.headers, *names)


def _wanted(query: MultiMapping[str], name: str) -> set[str]:
    return {v.strip() for v in query.get(name, "").split(",") if v.strip()}


def permitted(query: MultiMapping[str], session: Session) -> bool:
    """oauth2-proxy style `?allowed_groups=a,b` / `?allowed_roles=` narrowing per location."""
    groups, roles = _wanted(query, "allowed_groups"), _wanted(query, "allowed_roles")
    if groups and not groups & set(session.groups):
        return False
    return not (roles and not roles & set(session.roles))


def allowed_headers(st: State, session: Session) -> list[tuple[str, str]]:
    """The headers of a 200: who is signed in, and the signed assertion saying so."""
    assertion = st.signer.sign(session) if st.signer else None
    return [*NO_STORE.items(), *st.headers.identity(session, assertion)]


def _unauthenticated(request: web.Request, original_uri: str | None) -> web.Response:
    """401 with the sign-in URL (rd escaped here, not by the proxy's config language).

    `X-Authgate-Redirect` is present only when the original request was a
    browser navigation, so nginx can redirect browsers and answer APIs with 401.
    """
    target = login_url(state(request), original_uri)
    headers = {**NO_STORE, "WWW-Authenticate": CHALLENGE, LOGIN_HEADER: target}
    method = _original(request, "X-Original-Method", "X-Forwarded-Method") or "GET"
    if should_redirect(request, method.upper()):
        headers[REDIRECT_HEADER] = target
    return web.json_response(
        {"error": "unauthenticated", "login_url": target, "correlation_id": request[CID]},
        status=401,
        headers=headers,
    )


async def auth(request: web.Request) -> web.Response:
    st = state(request)
    original_uri = _original(request, "X-Original-URI", "X-Forwarded-Uri")
    if original_uri and st.public_paths.match(original_uri):
        st.metrics.count("auth", "public")
        return web.Response(status=200, headers=NO_STORE)
    session = await current_session(request)
    if session is None:
        st.metrics.count("auth", "unauthenticated")
        return _unauthenticated(request, original_uri)
    if not permitted(request.query, session):
        st.metrics.count("auth", "forbidden")
        return web.json_response(
            {"error": "forbidden", "correlation_id": request[CID]}, status=403, headers=NO_STORE
        )
    response = web.Response(status=200)
    for name, value in allowed_headers(st, session):
        response.headers[name] = value
    st.metrics.count("auth", "allowed")
    return response


async def userinfo(request: web.Request) -> web.Response:
    session = await current_session(request)
    if session is None:
        return web.json_response(
            {"error": "unauthenticated", "correlation_id": request[CID]},
            status=401,
            headers={**NO_STORE, "WWW-Authenticate": CHALLENGE},
        )
    return web.json_response(
        {
            "user_id": session.user_id,
            "username": session.username,
            "email": session.email,
            "name": session.name,
            "groups": list(session.groups),
            "roles": list(session.roles),
            "connection": session.connection,
            "expires_at": int(session.expires_at),
        },
        headers=NO_STORE,
    )


async def jwks(request: web.Request) -> web.Response:
    """Public keys only; cacheable briefly, since a rotation keeps the previous key listed."""
    st = state(request)
    keys = st.signer.jwks() if st.signer is not None else {"keys": []}
    return web.json_response(keys, headers={"Cache-Control": "public, max-age=300"})
