"""The development IdP's SAML endpoints: metadata, SSO and SLO (both HTTP bindings), and the
ArtifactResolutionService (SOAP) for SPs that ask for artifacts."""

from __future__ import annotations

from aiohttp import web

from authgate.bodies import read_capped
from authgate.devidp.pages import log
from authgate.devidp.saml import SamlRequestError
from authgate.devidp.state import (
    Pending,
    blocking,
    end_sso_session,
    idp_of,
    park,
    read_form,
    redirect,
)

SOAP_TYPE = "text/xml"
MAX_RESOLVE = 64 * 1024


async def saml_metadata(request: web.Request) -> web.Response:
    return web.Response(
        body=idp_of(request).saml.metadata(), content_type="application/samlmetadata+xml"
    )


async def _saml_params(request: web.Request) -> tuple[str, dict[str, str]]:
    if request.method == "POST":
        return "post", await read_form(request)
    return "redirect", dict(request.query)


async def saml_sso(request: web.Request) -> web.Response:
    idp = idp_of(request)
    binding, params = await _saml_params(request)
    if "SAMLRequest" not in params:
        return idp.pages.message("Invalid sign-in request", "No SAMLRequest.", status=400)
    try:
        login = await blocking(idp.saml.parse_login, binding, params["SAMLRequest"], params)
    except SamlRequestError as exc:
        log.warning("%s", exc)
        return idp.pages.message("Invalid sign-in request", str(exc), status=400)
    return park(request, Pending("saml", login, login.sp_entity_id, login.force_authn))


async def saml_slo(request: web.Request) -> web.Response:
    """SP-initiated single logout: verify the LogoutRequest, end the session, answer signed."""
    idp = idp_of(request)
    binding, params = await _saml_params(request)
    if "SAMLRequest" not in params:
        return idp.pages.message("Invalid sign-out request", "No LogoutRequest.", status=400)
    try:
        logout = await blocking(idp.saml.parse_logout, binding, params["SAMLRequest"], params)
    except SamlRequestError as exc:
        log.warning("%s", exc)
        return idp.pages.message("Invalid sign-out request", str(exc), status=400)
    reply = logout.reply
    if reply["fields"] is None:
        response = redirect(reply["url"])
    else:
        response = idp.pages.auto_post(reply["url"], reply["fields"], "SAML logout response")
    end_sso_session(request, response)
    log.info(
        "IdP session of %s ended by SAML single logout from %s",
        logout.name_id,
        logout.sp_entity_id,
    )
    return response


async def saml_resolve(request: web.Request) -> web.Response:
    """ArtifactResolutionService: an SP's server (no browser) resolves a SAMLart it was given."""
    idp = idp_of(request)
    body = await read_capped(request.content, MAX_RESOLVE)
    if len(body) > MAX_RESOLVE or request.content_type != SOAP_TYPE:
        return web.Response(status=400, text="expected one SOAP ArtifactResolve")
    try:
        envelope = await blocking(idp.saml.resolve_artifact, body)
    except SamlRequestError as exc:
        log.warning("%s", exc)
        return web.Response(status=400, text=str(exc))
    return web.Response(
        body=envelope, content_type=SOAP_TYPE, headers={"Cache-Control": "no-store"}
    )
