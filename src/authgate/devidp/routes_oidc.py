"""The development IdP's OpenID Provider endpoints over HTTP; the rules live in `oidc.py`."""

from __future__ import annotations

from aiohttp import web

from authgate.devidp.oidc import ClientError, OAuthError
from authgate.devidp.pages import log
from authgate.devidp.state import (
    Pending,
    end_sso_session,
    idp_of,
    json_answer,
    park,
    read_form,
    redirect,
    sso_session,
)


async def discovery(request: web.Request) -> web.Response:
    return json_answer(idp_of(request).oidc.discovery())


async def jwks(request: web.Request) -> web.Response:
    return json_answer(idp_of(request).oidc.jwks())


async def authorize(request: web.Request) -> web.Response:
    idp = idp_of(request)
    params = dict(request.query)
    try:
        auth = idp.oidc.authorization_request(params)
    except ClientError as exc:
        log.warning("authorization request refused: %s", exc)
        return idp.pages.message("Invalid sign-in request", exc.description, status=400)
    except OAuthError as exc:
        log.warning("authorization request refused: %s", exc)
        location = idp.oidc.error_redirect(
            params["redirect_uri"], params.get("state"), exc.error, exc.description
        )
        return redirect(location)
    if auth.prompt == "none":
        session = sso_session(request)
        user = idp.user(session.user_id) if session else None
        if session is None or user is None:
            return redirect(
                idp.oidc.error_redirect(
                    auth.redirect_uri, auth.state, "login_required", "no session at the IdP"
                )
            )
        return redirect(idp.oidc.issue_code(auth, user, session.auth_time))
    return park(request, Pending("oidc", auth, auth.client_id, auth.prompt == "login"))


async def token(request: web.Request) -> web.Response:
    idp = idp_of(request)
    try:
        answer = idp.oidc.token(await read_form(request), request.headers.get("Authorization"))
    except OAuthError as exc:
        log.warning("token request refused: %s", exc)
        extra = {"WWW-Authenticate": 'Basic realm="devidp"'} if exc.status == 401 else {}
        body = {"error": exc.error, "error_description": exc.description}
        return json_answer(body, exc.status, **extra)
    return json_answer(answer)


async def userinfo(request: web.Request) -> web.Response:
    try:
        return json_answer(idp_of(request).oidc.userinfo(request.headers.get("Authorization")))
    except OAuthError as exc:
        challenge = f'Bearer error="{exc.error}", error_description="{exc.description}"'
        return json_answer({"error": exc.error}, exc.status, **{"WWW-Authenticate": challenge})


async def end_session(request: web.Request) -> web.Response:
    """RP-initiated logout: end the IdP session, then return to a registered URI only."""
    idp = idp_of(request)
    try:
        target = idp.oidc.end_session(dict(request.query))
    except ClientError as exc:
        log.warning("end-session request refused: %s", exc)
        return idp.pages.message("Invalid sign-out request", exc.description, status=400)
    response = redirect(target) if target else _signed_out(request)
    end_sso_session(request, response)
    log.info("IdP session ended by end_session")
    return response


def _signed_out(request: web.Request) -> web.Response:
    return idp_of(request).pages.message("Signed out", "You are signed out of the development IdP.")
