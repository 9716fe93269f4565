"""The development IdP as an aiohttp application: one sign-in page for both protocols.

An OIDC authorization request or a SAML AuthnRequest is checked, parked as a
pending sign-in and the browser is sent to the sign-in page (`signin.py`);
signing in there completes whichever protocol started it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from authgate.devidp import routes_apps, routes_oidc, routes_register, routes_saml, signin
from authgate.devidp.pages import MARK
from authgate.devidp.state import HTTP, IDP, MAX_FORM, DevIdp, idp_of

# What aiohttp's own refusals (no such route, wrong method, form too large) say as a page.
HTTP_MESSAGES = {
    404: "There is no page at this address.",
    405: "This address does not accept that kind of request.",
    413: "The form sent is too large.",
}


@web.middleware
async def marked(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer says what it comes from, for anyone reading headers or proxies' logs."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _refusal_page(request, exc)
    response.headers["X-Development-IdP"] = MARK
    return response


def _refusal_page(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    """The router's 404/405 as a marked page like every other, not aiohttp's plain text."""
    text = HTTP_MESSAGES.get(exc.status, "The request was refused.")
    response = idp_of(request).pages.message(exc.reason, text, status=exc.status)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    """One client for the app's life: it fetches SP metadata registered on the index page and
    sends back-channel LogoutRequests."""
    async with aiohttp.ClientSession(headers={"User-Agent": "authgate development IdP"}) as http:
        app[HTTP] = http
        yield


def create_app(idp: DevIdp) -> web.Application:
    app = web.Application(middlewares=[marked], client_max_size=MAX_FORM)
    app[IDP] = idp
    app.cleanup_ctx.append(_http_client)
    app.router.add_get("/", signin.index)
    app.router.add_post("/register/saml", routes_register.register_saml)
    app.router.add_post("/register/oidc", routes_register.register_oidc)
    app.router.add_get("/apps", routes_apps.apps)
    app.router.add_post("/apps/sign-in", routes_apps.idp_initiated)
    app.router.add_post("/apps/sign-out", routes_apps.sign_out_everywhere)
    app.router.add_get("/login", signin.login_form)
    app.router.add_post("/login", signin.login_submit)
    app.router.add_get("/oidc/.well-known/openid-configuration", routes_oidc.discovery)
    app.router.add_get("/oidc/jwks", routes_oidc.jwks)
    app.router.add_get("/oidc/authorize", routes_oidc.authorize)
    app.router.add_post("/oidc/token", routes_oidc.token)
    app.router.add_route("GET", "/oidc/userinfo", routes_oidc.userinfo)
    app.router.add_route("POST", "/oidc/userinfo", routes_oidc.userinfo)
    app.router.add_get("/oidc/end_session", routes_oidc.end_session)
    app.router.add_get("/saml/metadata", routes_saml.saml_metadata)
    app.router.add_post("/saml/resolve", routes_saml.saml_resolve)
    for method in ("GET", "POST"):
        app.router.add_route(method, "/saml/sso", routes_saml.saml_sso)
        app.router.add_route(method, "/saml/slo", routes_saml.saml_slo)
    return app
