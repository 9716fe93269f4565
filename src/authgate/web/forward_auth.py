"""Forward-auth for nginx `auth_request`, Traefik and Envoy, plus the identity endpoints."""

from __future__ import annotations

from aiohttp import web

from authgate.session.sessions import Session
from authgate.web.client_info import CLIENT
from authgate.web.gate import current_session, login_url
from authgate.web.state import state


def _original_uri(request: web.Request) -> str | None:
    """The path nginx is asking about; only a trusted proxy may name it."""
    if not request[CLIENT].via_trusted_proxy:
        return None
    return request.headers.get("X-Original-URI") or request.headers.get("X-Forwarded-Uri")


def _wanted(request: web.Request, name: str) -> set[str]:
    return {v.strip() for v in request.query.get(name, "").split(",") if v.strip()}


def _permitted(request: web.Request, session: Session) -> bool:
    """oauth2-proxy style `?allowed_groups=a,b` / `?allowed_roles=` narrowing per location."""
    groups, roles = _wanted(request, "allowed_groups"), _wanted(request, "allowed_roles")
    if groups and not groups & set(session.groups):
        return False
    return not (roles and not roles & set(session.roles))


async def auth(request: web.Request) -> web.Response:
    st = state(request)
    original = _original_uri(request)
    if original and st.public_paths.match(original):
        st.metrics.requests.labels("auth", "public").inc()
        return web.Response(status=200, headers={"Cache-Control": "no-store"})
    session = await current_session(request)
    if session is None:
        st.metrics.requests.labels("auth", "unauthenticated").inc()
        target = login_url(st, st.redirects.safe(original or "/"))
        return web.json_response(
            {"error": "unauthenticated", "login_url": target},
            status=401,
            headers={"Cache-Control": "no-store"},
        )
    if not _permitted(request, session):
        st.metrics.requests.labels("auth", "forbidden").inc()
        return web.json_response(
            {"error": "forbidden"}, status=403, headers={"Cache-Control": "no-store"}
        )
    assertion = st.signer.sign(session) if st.signer else None
    response = web.Response(status=200, headers={"Cache-Control": "no-store"})
    for name, value in st.headers.identity(session, assertion):
        response.headers[name] = value
    st.metrics.requests.labels("auth", "allowed").inc()
    return response


async def userinfo(request: web.Request) -> web.Response:
    session = await current_session(request)
    if session is None:
        return web.json_response({"error": "unauthenticated"}, status=401)
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
        headers={"Cache-Control": "no-store"},
    )


async def jwks(request: web.Request) -> web.Response:
    st = state(request)
    if st.signer is None:
        return web.json_response({"keys": []})
    return web.json_response(st.signer.jwks(), headers={"Cache-Control": "public, max-age=300"})
