"""The development IdP as an aiohttp application: one sign-in page for both protocols.

An OIDC authorization request or a SAML AuthnRequest is checked, parked as a
pending sign-in and the browser is sent to the sign-in page (`signin.py`);
signing in there completes whichever protocol started it.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from authgate.devidp import routes_oidc, routes_saml, signin
from authgate.devidp.pages import MARK
from authgate.devidp.state import IDP, MAX_FORM, DevIdp


@web.middleware
async def marked(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer says what it comes from, for anyone reading headers or proxies' logs."""
    response = await handler(request)
    response.headers["X-Development-IdP"] = MARK
    return response


def create_app(idp: DevIdp) -> web.Application:
    app = web.Application(middlewares=[marked], client_max_size=MAX_FORM)
    app[IDP] = idp
    app.router.add_get("/", signin.index)
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
    for method in ("GET", "POST"):
        app.router.add_route(method, "/saml/sso", routes_saml.saml_sso)
        app.router.add_route(method, "/saml/slo", routes_saml.saml_slo)
    return app
