"""Registering a service provider on the development IdP's own page, while it runs.

`authgate demo` starts with the IdP trusting its two connections; a newcomer
who creates a third one in authgate's admin UI registers it here: a SAML SP
by its metadata (fetched from a loopback URL, or pasted), an OIDC client by
its redirect URI. Both forms are POSTs from the IdP's own page: the browser
must say so (`Sec-Fetch-Site`, `Origin`) and the form must carry this
process's token. A refusal is the IdP's message page; it never repeats what
was sent, nor a library's words.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from authgate.bodies import read_capped
from authgate.devidp.listen import is_loopback
from authgate.devidp.pages import log
from authgate.devidp.saml import SpMetadataError, SpOptions
from authgate.devidp.state import HTTP, MAX_FORM, DevIdp, blocking, idp_of, read_form
from authgate.web.origin import from_own_page, origin_of

FETCH_TIMEOUT = 5.0
MAX_URL = 2000


class Refused(Exception):
    """Why a registration was refused: a fixed sentence, shown on the message page."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def check_own_form(
    request: web.Request,
    idp: DevIdp,
    form: dict[str, str],
    page: str = "/",
    action: str = "register",
) -> None:
    """A cross-site page can make the browser POST here, but can neither read the token nor
    claim our origin; `page` and `action` say where to go and what to do again."""
    if not from_own_page(request.headers, origin_of(idp.config.base_url) or ""):
        raise Refused(
            403,
            f"This form must be sent from the development IdP's own page: open"
            f" {idp.config.base_url}{page} and {action} there.",
        )
    token = form.get("form_token", "")
    if not hmac.compare_digest(token.encode(), idp.form_token.encode()):
        raise Refused(
            403,
            "The form's token is missing or out of date (the IdP may have restarted):"
            f" reload the IdP's page and {action} again.",
        )


def _http_url(value: str, what: str) -> str:
    """An absolute http(s) URL with a host and a valid port, no user name and no fragment."""
    parts = urlsplit(value) if origin_of(value) is not None else None
    if (
        parts is None
        or len(value) > MAX_URL
        or parts.username is not None
        or parts.fragment
        or any(c.isspace() for c in value)
    ):
        raise Refused(
            400,
            f"The {what} must be an absolute http:// or https:// URL with a host, without a"
            " user name or #fragment.",
        )
    return value


def _metadata_url(value: str) -> str:
    """Loopback only: the IdP fetches it, and nobody should make it fetch elsewhere."""
    url = _http_url(value, "metadata URL")
    if not is_loopback(urlsplit(url).hostname or ""):
        raise Refused(
            400,
            "The development IdP fetches metadata from loopback addresses only"
            " (127.0.0.1, ::1, localhost). Paste the metadata XML instead.",
        )
    return url


async def _fetch(http: aiohttp.ClientSession, url: str) -> str:
    """The metadata document itself: 200 at that URL, no redirects, at most MAX_FORM bytes."""
    try:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        async with http.get(url, allow_redirects=False, timeout=timeout) as resp:
            if resp.status != 200:
                raise Refused(
                    502, f"The metadata URL answered HTTP {resp.status}, not 200 with metadata."
                )
            raw = await read_capped(resp.content, MAX_FORM)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise Refused(
            502,
            "Could not fetch the metadata: check the URL and that the service provider is running.",
        ) from None
    if len(raw) > MAX_FORM:
        raise Refused(400, f"The metadata is larger than {MAX_FORM // 1024} KiB.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "This is not SAML metadata: it is not UTF-8 XML.") from None


async def _metadata(request: web.Request, form: dict[str, str]) -> str:
    url, xml = form.get("metadata_url", "").strip(), form.get("metadata_xml", "").strip()
    if bool(url) == bool(xml):
        raise Refused(400, "Give either the SP's metadata URL or its metadata XML.")
    if xml:
        return xml
    return await _fetch(request.app[HTTP], _metadata_url(url))


def _refused(idp: DevIdp, what: str, exc: Refused) -> web.Response:
    log.warning("%s registration refused: %s", what, exc.text)
    return idp.pages.message("Registration refused", exc.text, status=exc.status)


async def register_saml(request: web.Request) -> web.Response:
    """Trust a SAML SP from now on, and show what to give authgate."""
    idp = idp_of(request)
    form = await read_form(request)
    try:
        check_own_form(request, idp, form)
        xml = await _metadata(request, form)
        options = SpOptions(
            encrypt_assertion="encrypt_assertion" in form, encrypt_name_id="encrypt_name_id" in form
        )
        try:
            sp = await blocking(idp.saml.register_sp, xml, options)
        except SpMetadataError as exc:
            raise Refused(400, str(exc)) from None
    except Refused as exc:
        return _refused(idp, "SAML SP", exc)
    log.info("SAML SP %r registered (ACS %s)", sp.entity_id, ", ".join(sp.acs_urls))
    return idp.pages.render(
        "registered.html",
        kind="saml",
        sp=sp,
        options=options,
        idp_metadata=idp.saml.entity_id,
    )


async def register_oidc(request: web.Request) -> web.Response:
    """A new OIDC client with generated credentials, shown once to copy into authgate."""
    idp = idp_of(request)
    form = await read_form(request)
    try:
        check_own_form(request, idp, form)
        redirect_uri = _http_url(form.get("redirect_uri", "").strip(), "redirect URI")
        logout = form.get("post_logout_redirect_uri", "").strip()
        if logout:
            _http_url(logout, "sign-out return URI")
    except Refused as exc:
        return _refused(idp, "OIDC client", exc)
    client = idp.oidc.register(redirect_uri, logout)
    log.info("OIDC client %s registered for %s", client.client_id, redirect_uri)
    return idp.pages.render(
        "registered.html",
        kind="oidc",
        client=client,
        issuer=idp.oidc.issuer,
        discovery=idp.oidc.issuer + "/.well-known/openid-configuration",
    )
