"""The development IdP's "Your applications" page: IdP-initiated sign-in and sign out everywhere.

A person picks a trusted SAML service provider and a target path; after
signing in (or continuing the IdP's session) the IdP POSTs an unsolicited
Response to the SP's ACS with that path as RelayState. authgate takes it only
on a connection with `allow_idp_initiated`, and sends the person to the path
only if its redirect policy allows it, so the IdP passes the path on as typed.

"Sign out everywhere" ends the IdP's session and sends every SP it signed the
person in to a signed LogoutRequest over SOAP (the back channel, no browser),
naming that sign-in's SessionIndex, then shows each SP's answer. Like the
metadata fetch, it only calls loopback URLs. Both forms are POSTs from the
IdP's own page, with its token (see `routes_register.check_own_form`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from saml2.samlp import STATUS_SUCCESS

from authgate.bodies import read_capped
from authgate.devidp.listen import is_loopback
from authgate.devidp.pages import log
from authgate.devidp.routes_register import Refused, check_own_form
from authgate.devidp.saml import SamlRequestError, SpSession
from authgate.devidp.state import (
    HTTP,
    MAX_FORM,
    SESSION_COOKIE,
    DevIdp,
    Pending,
    blocking,
    end_sso_session,
    idp_of,
    park,
    read_form,
    sso_session,
)

MAX_RELAY_STATE = 80
SOAP_TIMEOUT = 5.0
PAGE = "/apps"


@dataclass(frozen=True, slots=True)
class LogoutResult:
    """What one SP made of the back-channel LogoutRequest, as the result page shows it."""

    sp_entity_id: str
    outcome: str
    ok: bool


async def apps(request: web.Request) -> web.Response:
    """The page's forms need the browser to send our `Origin` (see `signin.index`)."""
    idp = idp_of(request)
    session = sso_session(request)
    response = idp.pages.render(
        "apps.html",
        sps=await blocking(idp.saml.known_sps),
        user=idp.user(session.user_id) if session is not None else None,
        form_token=idp.form_token,
        max_relay_state=MAX_RELAY_STATE,
    )
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _refused(idp: DevIdp, heading: str, exc: Refused) -> web.Response:
    log.warning("%s: %s", heading, exc.text)
    return idp.pages.message(heading, exc.text, status=exc.status)


async def idp_initiated(request: web.Request) -> web.Response:
    """Park an unsolicited sign-in to the chosen SP; the sign-in page completes it."""
    idp = idp_of(request)
    form = await read_form(request)
    try:
        check_own_form(request, idp, form, PAGE, "start the sign-in")
        relay_state = form.get("relay_state", "").strip()
        if len(relay_state) > MAX_RELAY_STATE:
            raise Refused(
                400,
                f"The target path is longer than {MAX_RELAY_STATE} characters, the most a"
                " SAML RelayState carries.",
            )
        try:
            login = await blocking(idp.saml.unsolicited_login, form.get("sp", ""), relay_state)
        except SamlRequestError:
            raise Refused(400, "This IdP trusts no such SAML service provider.") from None
    except Refused as exc:
        return _refused(idp, "Sign-in refused", exc)
    log.info("IdP-initiated sign-in to %s, RelayState %r", login.sp_entity_id, relay_state)
    return park(request, Pending("saml", login, login.sp_entity_id, force_login=False))


async def sign_out_everywhere(request: web.Request) -> web.Response:
    """End the IdP session, then tell each SP it signed the person in to, by SOAP."""
    idp = idp_of(request)
    form = await read_form(request)
    try:
        check_own_form(request, idp, form, PAGE, "sign out")
    except Refused as exc:
        return _refused(idp, "Sign-out refused", exc)
    sid = request.cookies.get(SESSION_COOKIE, "")
    joined = (idp.sp_sessions.take(sid) if sid else None) or ()
    results = [await _back_channel_logout(request, idp, sp_session) for sp_session in joined]
    response = idp.pages.render("signed_out_everywhere.html", results=results)
    end_sso_session(request, response)
    log.info(
        "IdP session ended everywhere: %s",
        "; ".join(f"{r.sp_entity_id}: {r.outcome}" for r in results) or "no SAML SP sessions",
    )
    return response


async def _back_channel_logout(
    request: web.Request, idp: DevIdp, sp_session: SpSession
) -> LogoutResult:
    def result(outcome: str, ok: bool = False) -> LogoutResult:
        return LogoutResult(sp_session.sp_entity_id, outcome, ok)

    call = await blocking(idp.saml.soap_logout_request, sp_session)
    if call is None:
        return result("not told: its metadata lists no SOAP single logout URL")
    if not is_loopback(urlsplit(call.url).hostname or ""):
        return result("not told: this IdP calls loopback addresses only")
    try:
        timeout = aiohttp.ClientTimeout(total=SOAP_TIMEOUT)
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
        async with request.app[HTTP].post(
            call.url, data=call.envelope, headers=headers, allow_redirects=False, timeout=timeout
        ) as answer:
            status, body = answer.status, await read_capped(answer.content, MAX_FORM)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return result("could not reach its SOAP single logout URL")
    if status != 200 or len(body) > MAX_FORM:
        return result(f"answered HTTP {status}, not a LogoutResponse")
    try:
        saml_status = await blocking(idp.saml.soap_logout_status, call, body)
    except SamlRequestError as exc:
        log.warning("LogoutResponse from %s refused: %s", sp_session.sp_entity_id, exc)
        return result("its LogoutResponse was refused (the IdP's log says why)")
    if saml_status != STATUS_SUCCESS:
        return result(f"answered with status {saml_status}")
    return result(f"signed out (session {sp_session.session_index})", ok=True)
