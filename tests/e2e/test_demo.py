"""`authgate demo` end to end over real HTTP: the development IdP, the legacy app and authgate.

One demo per module, started as `authgate demo` starts it (sockets, keys,
SAML metadata fetched by URL). An HTTP client with a cookie jar plays the
browser, including the SAML HTTP-POST hop. The real browser runs in
`test_browser_demo.py`; this file covers every demo path quickly.
"""

from __future__ import annotations

import asyncio
import base64
import re
import sys
from collections.abc import AsyncIterator
from html import unescape
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from lxml import etree
from yarl import URL

from authgate.demo import OIDC_ID, SAML_ID, Demo
from authgate.devidp import PASSWORD
from authgate.web.state import STATE
from tests.simplesamlphp import HTML, Browser

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo() -> AsyncIterator[Demo]:
    running = Demo("127.0.0.1", 0)
    await running.start()
    yield running
    await running.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """A fresh cookie jar per test; redirects followed byte for byte, as a browser does."""
    client = Browser()
    yield client
    await client.close()


async def _start(browser: Browser, demo: Demo, conn: str) -> tuple[aiohttp.ClientResponse, str]:
    """From the connection's login URL to the IdP's sign-in page and its pending sign-in id."""
    kind = "saml" if conn == SAML_ID else "oidc"
    page = await browser.follow(f"{demo.url}/_authgate/{kind}/{conn}/login?rd=%2Freport")
    assert page.status == 200
    assert page.url.path == "/login", page.url
    return page, page.url.query["txn"]


async def _after_idp(browser: Browser, answer: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    """Submit the SAML HTTP-POST form the IdP may answer with, as the browser's script would."""
    if 'id="post"' not in await answer.text():
        return answer
    return await browser.submit_auto_post(answer)


async def _idp_form(browser: Browser, demo: Demo, data: dict[str, str]) -> aiohttp.ClientResponse:
    answer = await browser.http.post(f"{demo.idp_url}/login", data=data, allow_redirects=False)
    if answer.status == 302:
        answer = await browser.follow(answer.headers["Location"], str(answer.url))
    return await _after_idp(browser, answer)


async def sign_in(
    browser: Browser, demo: Demo, conn: str, email: str, password: str = PASSWORD
) -> aiohttp.ClientResponse:
    _, txn = await _start(browser, demo, conn)
    return await _idp_form(browser, demo, {"txn": txn, "email": email, "password": password})


def _cell(page: str, header: str) -> str:
    match = re.search(rf'<td id="{header.lower()}">(.*?)</td>', page, re.S)
    assert match, f"{header} row missing"
    return unescape(match.group(1)).strip()


async def test_the_banner_names_the_url_users_with_their_button_and_password(demo: Demo):
    banner = demo.banner()
    assert (
        f"Open {demo.url}/ — SAML button: alice@example.com (admins), bob@example.com (users);"
        " OpenID Connect button: dave@partner.example (engineering);"
        " either button: carol@partner.example (unverified email),"
        " mallory@evil.example (domain not allowed); password for all: demo"
    ) in banner
    assert "(sign in as alice@example.com with the SAML button)" in banner


async def test_oidc_sign_in_reaches_the_app_with_verified_identity(demo: Demo, browser: Browser):
    page = await sign_in(browser, demo, OIDC_ID, "dave@partner.example")
    text = await page.text()
    assert page.status == 200
    assert page.url == URL(f"{demo.url}/report")
    assert _cell(text, "X-User") == "dave@partner.example"
    assert _cell(text, "X-Auth-Connection") == OIDC_ID
    assert _cell(text, "X-Groups") == "partners,engineering"
    assert _cell(text, "X-Roles") == "editor"
    assert _assertion_status(text).startswith("Verified with authgate's published keys"), text


async def test_saml_sign_in_reaches_the_app_with_verified_identity(demo: Demo, browser: Browser):
    page = await sign_in(browser, demo, SAML_ID, "bob@example.com")
    text = await page.text()
    assert page.url == URL(f"{demo.url}/report")
    assert _cell(text, "X-User") == "bob@example.com"
    assert _cell(text, "X-User-Name") == "Bob User"
    assert _cell(text, "X-Auth-Connection") == SAML_ID
    assert _cell(text, "X-Roles") == "viewer"
    assert _assertion_status(text).startswith("Verified with authgate's published keys"), text


@pytest.mark.parametrize("conn", [OIDC_ID, SAML_ID])
async def test_the_disallowed_domain_is_refused_and_recorded(
    demo: Demo, browser: Browser, conn: str
):
    page = await sign_in(browser, demo, conn, "mallory@evil.example")
    text = await page.text()
    assert page.status == 403
    assert '<code id="reason">domain_not_allowed</code>' in text
    cid = re.search(r'<code id="correlation-id">([^<]+)</code>', text)
    assert cid and cid.group(1) == page.headers["X-Request-Id"]
    status = await demo_app_state(demo).status.get(conn)
    assert status["last_failure_reason"] == "domain_not_allowed"
    assert status["last_failure_correlation_id"] == cid.group(1)


@pytest.mark.parametrize("conn", [OIDC_ID, SAML_ID])
async def test_the_unverified_email_is_refused(demo: Demo, browser: Browser, conn: str):
    """OIDC says email_verified=false; the SAML side withholds an unverified address."""
    page = await sign_in(browser, demo, conn, "carol@partner.example")
    assert page.status == 403
    assert '<code id="reason">email_unverified</code>' in await page.text()


@pytest.mark.parametrize(
    ("conn", "email"), [(OIDC_ID, "dave@partner.example"), (SAML_ID, "alice@example.com")]
)
async def test_a_wrong_password_keeps_the_person_at_the_idp(
    demo: Demo, browser: Browser, conn: str, email: str
):
    page = await sign_in(browser, demo, conn, email, password="Demo")
    assert page.status == 401
    assert page.url.path == "/login"
    assert "Wrong email or password." in await page.text()


@pytest.mark.parametrize("conn", [OIDC_ID, SAML_ID])
async def test_cancelling_at_the_idp_is_an_idp_error(demo: Demo, browser: Browser, conn: str):
    _, txn = await _start(browser, demo, conn)
    page = await _idp_form(browser, demo, {"txn": txn, "cancel": "1"})
    assert page.status in (400, 403)
    assert '<code id="reason">idp_error</code>' in await page.text()


@pytest.mark.parametrize(
    ("conn", "email", "name", "returns_at"),
    [
        (OIDC_ID, "dave@partner.example", "Dave Partner", "/_authgate/logout"),
        (SAML_ID, "bob@example.com", "Bob User", f"/_authgate/saml/{SAML_ID}/slo"),
    ],
)
async def test_sign_out_ends_both_sessions(
    demo: Demo, browser: Browser, conn: str, email: str, name: str, returns_at: str
):
    """authgate's session, then the IdP's (OIDC end-session / SAML single logout)."""
    await sign_in(browser, demo, conn, email)
    again, _ = await _start(browser, demo, conn)
    assert f"Continue as {name}" in await again.text()
    logout = await browser.follow(f"{demo.url}/_authgate/logout", typed=True)
    signed_out = await _after_idp(browser, logout)
    assert signed_out.status == 200
    assert signed_out.url.path == returns_at
    assert "You have been signed out" in await signed_out.text()
    app = await browser.http.get(f"{demo.url}/report", allow_redirects=False, headers=HTML)
    assert app.status == 302
    assert app.headers["Location"].startswith("/_authgate/login?rd=")
    after, _ = await _start(browser, demo, conn)
    assert "Continue as" not in await after.text()


async def test_every_user_who_gets_in_has_one_button_so_none_meets_email_conflict(
    demo: Demo, browser: Browser
):
    """authgate never merges two subjects by email: the IdP offers each person to one side."""
    for conn, email in [
        (SAML_ID, "bob@example.com"),
        (OIDC_ID, "dave@partner.example"),
        (SAML_ID, "alice@example.com"),
    ]:
        page = await sign_in(browser, demo, conn, email)
        assert page.status == 200, await page.text()
        assert _cell(await page.text(), "X-User") == email
    for conn, email, other in [
        (OIDC_ID, "bob@example.com", "SAML"),
        (SAML_ID, "dave@partner.example", "OpenID Connect"),
    ]:
        page = await sign_in(browser, demo, conn, email)
        assert (page.status, page.url.path) == (401, "/login")
        assert f"{email} signs in with {other}: go back and use that button." in await page.text()


@pytest.mark.parametrize(
    ("email", "conn"),
    [
        ("alice@example.com", f"saml/{SAML_ID}"),
        ("dave@partner.example", f"oidc/{OIDC_ID}"),
        ("carol@partner.example", f"oidc/{OIDC_ID}"),
    ],
)
async def test_home_realm_discovery_picks_the_connection_by_domain(
    demo: Demo, browser: Browser, email: str, conn: str
):
    answer = await browser.http.get(
        f"{demo.url}/_authgate/login", params={"email": email, "rd": "/"}, allow_redirects=False
    )
    assert answer.status == 302
    assert URL(answer.headers["Location"]).path == f"/_authgate/{conn}/login"


async def test_the_sign_in_page_offers_both_connections(demo: Demo, browser: Browser):
    page = await browser.follow(f"{demo.url}/")
    text = await page.text()
    assert page.url.path == "/_authgate/login"
    assert "Log in using Development IdP (SAML)" in text
    assert "Log in using Development IdP (OpenID Connect)" in text
    assert "<title>Sign in · authgate demo</title>" in text


def _assertion_status(page: str) -> str:
    match = re.search(r'<p id="assertion-status"[^>]*>(.*?)</p>', page, re.S)
    assert match, "assertion status missing"
    return unescape(match.group(1)).strip()


def demo_app_state(demo: Demo) -> Any:
    """authgate's state inside the demo (the last runner started is authgate's)."""
    return demo._runners[-1].app[STATE]


async def test_the_command_refuses_a_non_loopback_address():
    command = [sys.executable, "-m", "authgate", "demo", "--host", "0.0.0.0", "--port", "0"]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2
    assert "refuses to listen on '0.0.0.0'" in stderr.decode()
    assert "pass --force to override" in stderr.decode()


SAML_SP = f"/_authgate/saml/{SAML_ID}"
NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "xenc": "http://www.w3.org/2001/04/xmlenc#",
}


async def apps_form(
    browser: Browser, demo: Demo, action: str, data: dict[str, str]
) -> aiohttp.ClientResponse:
    """A form of the IdP's Your applications page, sent as a browser sends it (our Origin)."""
    page = await browser.follow(f"{demo.idp_url}/apps")
    token = re.search(r'name="form_token" value="([^"]+)"', await page.text())
    assert token, "no form token on the apps page"
    answer = await browser.http.post(
        f"{demo.idp_url}{action}",
        data={"form_token": token.group(1), **data},
        headers={**HTML, "Origin": demo.idp_url},
        allow_redirects=False,
    )
    if answer.status == 302:
        return await browser.follow(answer.headers["Location"], str(answer.url))
    return answer


async def idp_initiated(
    browser: Browser, demo: Demo, relay_state: str, email: str = "bob@example.com"
) -> aiohttp.ClientResponse:
    """Your applications → Sign in to the demo's SAML SP → the IdP's sign-in page → authgate."""
    login = await apps_form(
        browser, demo, "/apps/sign-in", {"sp": demo.url + SAML_SP, "relay_state": relay_state}
    )
    assert login.url.path == "/login", await login.text()
    txn = login.url.query["txn"]
    return await _idp_form(browser, demo, {"txn": txn, "email": email, "password": PASSWORD})


async def test_the_idp_encrypts_the_assertion_and_name_id_and_authgate_decrypts_them(
    demo: Demo, browser: Browser
):
    _, txn = await _start(browser, demo, SAML_ID)
    data = {"txn": txn, "email": "alice@example.com", "password": PASSWORD}
    answer = await browser.http.post(f"{demo.idp_url}/login", data=data, allow_redirects=False)
    form = re.search(r'name="SAMLResponse" value="([^"]+)"', await answer.text())
    assert form, "no SAMLResponse on the IdP's POST page"
    wire = etree.fromstring(base64.b64decode(unescape(form.group(1))))
    assert (
        len(wire.xpath("/samlp:Response/saml:EncryptedAssertion/xenc:EncryptedData", namespaces=NS))
        == 1
    )
    assert wire.xpath("//saml:Assertion | //saml:NameID | //saml:Attribute", namespaces=NS) == []
    page = await browser.submit_auto_post(answer)
    assert (page.status, page.url) == (200, URL(f"{demo.url}/report"))
    assert _cell(await page.text(), "X-User") == "alice@example.com"


@pytest.mark.parametrize(
    ("relay_state", "lands_on"),
    [("/reports/q3?view=full", "/reports/q3?view=full"), ("https://evil.example/take", "/")],
)
async def test_idp_initiated_sign_in_lands_on_the_relay_state_path_if_safe(
    demo: Demo, browser: Browser, relay_state: str, lands_on: str
):
    """authgate's redirect policy decides: a path of its own is kept, another site is not."""
    page = await idp_initiated(browser, demo, relay_state)
    assert (page.status, page.url) == (200, URL(demo.url + lands_on, encoded=True))
    assert _cell(await page.text(), "X-User") == "bob@example.com"
    assert _cell(await page.text(), "X-Auth-Connection") == SAML_ID


async def test_sign_out_everywhere_ends_exactly_that_session_by_soap(demo: Demo, browser: Browser):
    """Two IdP sessions of bob, two authgate sessions: the SOAP LogoutRequest names the
    SessionIndex of one, so the other stays signed in."""
    other = Browser()
    try:
        for client in (browser, other):
            assert (await sign_in(client, demo, SAML_ID, "bob@example.com")).status == 200
        result = await apps_form(browser, demo, "/apps/sign-out", {})
        text = unescape(await result.text())
        assert result.status == 200
        assert re.search(
            rf"<code>{re.escape(demo.url + SAML_SP)}</code>: signed out \(session ", text
        )
        ended = await browser.http.get(f"{demo.url}/report", allow_redirects=False, headers=HTML)
        assert ended.status == 302
        assert ended.headers["Location"].startswith("/_authgate/login?rd=")
        kept = await other.http.get(f"{demo.url}/report", allow_redirects=False, headers=HTML)
        assert kept.status == 200
        assert _cell(await kept.text(), "X-User") == "bob@example.com"
        again, _ = await _start(browser, demo, SAML_ID)
        assert "Continue as" not in await again.text()
    finally:
        await other.close()
