"""Forward-auth for nginx `auth_request`, Traefik and Envoy, plus the identity endpoints.

The front proxy asks "may this request in?" and acts on the status: 200 (copy
the identity headers from the answer), 401 (send the browser to sign in), 403.
It names the original request in headers that only a trusted proxy may set:
from anyone else they could turn a protected path into a public one.
"""

from __future__ import annotations

from aiohttp import web
from multidict import MultiMapping

from authgate.errors import Forbidden
from authgate.session.sessions import Session
from authgate.web.client_info import CLIENT, ClientInfo
from authgate.web.gate import current_session, login_url, should_redirect, unauthenticated
from authgate.web.middlewares import REASON_HEADER
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
    headers = {LOGIN_HEADER: target}
    method = _original(request, "X-Original-Method", "X-Forwarded-Method") or "GET"
    if should_redirect(request, method.upper()):
        headers[REDIRECT_HEADER] = target
    return unauthenticated(request, target, **headers)


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
        raise Forbidden(detail="not in the location's allowed_groups / allowed_roles")
    response = web.Response(status=200)
    for name, value in allowed_headers(st, session):
        response.headers[name] = value
    st.metrics.count("auth", "allowed")
    return response


async def refused(request: web.Request) -> web.Response:
    """The refusal /auth just gave, rendered for the caller (nginx's `error_page 401 403`).

    nginx cannot show authgate's answer to an `auth_request`, so it copies the
    reason and the request id of that answer into this request. The reason is
    believed only from a trusted proxy and only as one of the two codes /auth
    gives, so no one can make this page say what authgate did not decide; the
    correlation id is the trusted X-Request-Id, like any other.
    """
    if _original(request, REASON_HEADER) == "unauthenticated":
        return _unauthenticated(request, _original(request, "X-Original-URI", "X-Forwarded-Uri"))
    raise Forbidden(detail="forward-auth refusal shown by the front proxy")


async def userinfo(request: web.Request) -> web.Response:
    session = await current_session(request)
    if session is None:
        return unauthenticated(request, login_url(state(request), None))
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
