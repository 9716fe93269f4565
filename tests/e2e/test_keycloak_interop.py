"""Interop with Keycloak, the self-hosted IdP operators run most, as OIDC provider and SAML IdP.

One Keycloak serves the session (tests/keycloak.py, realm in
tests/fixtures/keycloak/); authgate runs as a real server on Redis at the
port the realm's clients name, with these connections to it: `kco` (OIDC,
discovery from the realm's issuer, Keycloak's back-channel logout, a
post-logout URL of its own), `kcf` (OIDC, Keycloak's front-channel logout),
`kc` (SAML, signed AuthnRequests, signed
responses and assertions), `kce` (the same, assertions encrypted to the SP
key) and `kcs` (the same, with Keycloak's back-channel logout over SOAP). A
plain HTTP client fills Keycloak's own login form, submits its SAML POST
page and loads its logout page's iframes, as a browser would.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from lxml import etree
from yarl import URL

from authgate.app import create_app
from authgate.protocols.saml_xml import DS, SAML, child
from authgate.settings import parse_settings
from authgate.web.state import STATE
from tests.conftest import UPSTREAM_HITS
from tests.keycloak import (
    FRONT_CHANNEL_CLIENT,
    OIDC_CLIENT,
    OIDC_SECRET,
    Keycloak,
    KeycloakBrowser,
    iframe_sources,
)

READY_WITHIN = 20.0
JSON = {"Accept": "application/json"}
SIGNED_OUT = "/signed-out"


def oidc_connection(conn_id: str, keycloak: Keycloak, client_id: str) -> dict[str, Any]:
    return {
        "id": conn_id,
        "name": f"Keycloak OIDC ({conn_id})",
        "type": "oidc",
        "issuer": keycloak.issuer,
        "client_id": client_id,
        "client_secret": OIDC_SECRET,
        "scopes": ["openid", "email", "profile"],
    }


def saml_connection(conn_id: str, keycloak: Keycloak, sp_keys: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": conn_id,
        "name": f"Keycloak SAML ({conn_id})",
        "type": "saml",
        "idp_metadata_url": keycloak.saml_metadata_url,
        "sp_keys": [sp_keys],
        "sign_requests": True,
        "want_response_signed": True,
        "name_id_format": "emailAddress",
    }


@pytest.fixture
async def gate(
    keycloak: Keycloak, sp_keys: dict[str, Any], redis_url: str, counted_upstream: TestServer
) -> AsyncIterator[web.Application]:
    settings = parse_settings(
        {
            "public_url": keycloak.sp_base,
            "upstream": {"url": str(counted_upstream.make_url("")).rstrip("/")},
            "session": {"store": "redis", "redis": {"url": redis_url}},
            "audit": {"output": "stdout"},
            "access": {"public_paths": [SIGNED_OUT]},
            "connections": [
                {**oidc_connection("kco", keycloak, OIDC_CLIENT), "post_logout_url": SIGNED_OUT},
                oidc_connection("kcf", keycloak, FRONT_CHANNEL_CLIENT),
                saml_connection("kc", keycloak, sp_keys),
                saml_connection("kce", keycloak, sp_keys),
                saml_connection("kcs", keycloak, sp_keys),
            ],
        },
        "keycloak-interop.yaml",
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", keycloak.sp_port, reuse_address=True).start()
    await _ready(keycloak)
    yield app
    await runner.cleanup()


async def _ready(keycloak: Keycloak) -> None:
    """Discovery and metadata are fetched in the background from start-up; readyz tells."""
    browser = KeycloakBrowser(keycloak)
    deadline = time.monotonic() + READY_WITHIN
    try:
        while True:
            ready = await browser.http.get(keycloak.sp_base + "/_authgate/readyz")
            checks = (await ready.json())["checks"]
            pending = {k: v for k, v in checks.items() if k.startswith("connection:") and v != "ok"}
            if not pending:
                return
            assert time.monotonic() < deadline, pending
            await asyncio.sleep(0.1)
    finally:
        await browser.close()


@pytest.fixture
async def browser(keycloak: Keycloak) -> AsyncIterator[KeycloakBrowser]:
    client = KeycloakBrowser(keycloak)
    yield client
    await client.close()


async def sign_in(browser: KeycloakBrowser, keycloak: Keycloak, login_path: str) -> dict[str, str]:
    """From authgate's login URL through Keycloak's form back to /app/page; the upstream's view."""
    at_idp = await browser.follow(f"{keycloak.sp_base}{login_path}?rd=/app/page", typed=True)
    assert at_idp.url.port == keycloak.port, await at_idp.text()
    page = await browser.sign_in_at_keycloak(at_idp)
    if page.url.port == keycloak.port:
        page = await browser.submit(page)
    assert page.status == 200, (await page.text())[:3000]
    assert page.url.path == "/app/page"
    return dict((await page.json())["headers"])


def saml_response(browser: KeycloakBrowser) -> etree._Element:
    """The last SAMLResponse Keycloak had the browser post to authgate."""
    posted = next(p["SAMLResponse"] for p in reversed(browser.posted) if "SAMLResponse" in p)
    return etree.fromstring(base64.b64decode(posted))


async def test_oidc_sign_in_through_keycloak(browser, keycloak, gate, counted_upstream):
    headers = await sign_in(browser, keycloak, "/_authgate/oidc/kco/login")
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-Email"] == "alice@example.com"
    assert headers["X-User-Name"] == "Alice Example"
    assert headers["X-Groups"] == "engineering"
    assert headers["X-Auth-Connection"] == "kco"
    assert counted_upstream.app[UPSTREAM_HITS] == ["/app/page"]


async def test_sign_out_at_authgate_ends_the_keycloak_session(browser, keycloak, gate):
    """authgate's sign-out ends its session, then sends the browser to Keycloak's
    end_session_endpoint with the ID token as hint and the connection's post_logout_url;
    Keycloak takes both (no confirmation page, no error page), ends its own sign-in and
    returns the browser there: the next sign-in asks for the password again."""
    await sign_in(browser, keycloak, "/_authgate/oidc/kco/login")
    logout = await browser.http.get(
        keycloak.sp_base + "/_authgate/logout",
        allow_redirects=False,
        headers={"Sec-Fetch-Site": "none"},
    )
    assert logout.status == 302
    end_session = URL(logout.headers["Location"], encoded=True)
    assert str(end_session.with_query(None)) == keycloak.issuer + "/protocol/openid-connect/logout"
    assert end_session.query["post_logout_redirect_uri"] == keycloak.sp_base + SIGNED_OUT
    assert end_session.query["client_id"] == OIDC_CLIENT
    assert "id_token_hint" in end_session.query
    back = await browser.follow(logout.headers["Location"], str(logout.url))
    assert back.status == 200, (await back.text())[:2000]
    assert str(back.url) == keycloak.sp_base + SIGNED_OUT
    after = await browser.http.get(keycloak.sp_base + "/app/page", headers=JSON)
    assert after.status == 401
    again = await browser.follow(keycloak.sp_base + "/_authgate/oidc/kco/login", typed=True)
    assert again.url.port == keycloak.port
    assert 'name="password"' in await again.text()


async def test_saml_sign_in_with_signed_assertions(browser, keycloak, gate, counted_upstream):
    headers = await sign_in(browser, keycloak, "/_authgate/saml/kc/login")
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-Auth-Connection"] == "kc"
    assert headers["X-Groups"] == "engineering"
    response = saml_response(browser)
    assert child(response, DS + "Signature") is not None
    assert child(child(response, SAML + "Assertion"), DS + "Signature") is not None
    st = gate[STATE]
    user = await st.users.by_link("kc", "alice@example.com")
    assert user is not None and await st.sessions.count_for_user(user.id) == 1


async def test_saml_sign_in_with_encrypted_assertions(browser, keycloak, gate):
    headers = await sign_in(browser, keycloak, "/_authgate/saml/kce/login")
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-Auth-Connection"] == "kce"
    response = saml_response(browser)
    assert child(response, SAML + "EncryptedAssertion") is not None
    assert next(response.iter(SAML + "Assertion"), None) is None


@pytest.mark.parametrize(
    "conn_id", ["kc", "kcs"], ids=["front-channel (redirect)", "back-channel (SOAP)"]
)
async def test_sign_out_at_keycloak_ends_only_that_sign_in(keycloak, gate, conn_id):
    """Two browsers sign in; one signs out at Keycloak, which sends authgate a signed
    LogoutRequest naming that sign-in's SessionIndex: through that browser (`kc`), or from
    its own server to the SOAP endpoint (`kcs`). That session ends, the other one stays."""
    browsers = [KeycloakBrowser(keycloak), KeycloakBrowser(keycloak)]
    try:
        for browser in browsers:
            headers = await sign_in(browser, keycloak, f"/_authgate/saml/{conn_id}/login")
            assert headers["X-Auth-Connection"] == conn_id
        st = gate[STATE]
        user = await st.users.by_link(conn_id, "alice@example.com")
        assert user is not None and await st.sessions.count_for_user(user.id) == 2
        leaving, staying = browsers
        confirm = await leaving.follow(keycloak.issuer + "/protocol/openid-connect/logout")
        done = await leaving.submit(confirm)
        while "SAMLRequest" in (page := await done.text()) or "SAMLResponse" in page:
            done = await leaving.submit(done)
        assert done.status == 200, page[:2000]
        assert done.url.port == keycloak.port
        assert "you are logged out" in page.lower(), page[:2000]
        assert await st.sessions.count_for_user(user.id) == 1
        gone = await leaving.http.get(keycloak.sp_base + "/app/page", headers=JSON)
        assert gone.status == 401
        kept = await staying.http.get(keycloak.sp_base + "/app/page", headers=JSON)
        assert kept.status == 200
    finally:
        for browser in browsers:
            await browser.close()


async def _two_sign_ins(
    keycloak: Keycloak, gate: web.Application, conn_id: str
) -> tuple[list[KeycloakBrowser], str]:
    """Two browsers signed in through `conn_id`; the user id both sessions belong to."""
    browsers = [KeycloakBrowser(keycloak), KeycloakBrowser(keycloak)]
    for browser in browsers:
        headers = await sign_in(browser, keycloak, f"/_authgate/oidc/{conn_id}/login")
        assert headers["X-Auth-Connection"] == conn_id
    user = await gate[STATE].users.by_email("alice@example.com")
    assert user is not None and await gate[STATE].sessions.count_for_user(user.id) == 2
    return browsers, user.id


async def _sign_out_at_keycloak(browser: KeycloakBrowser, keycloak: Keycloak) -> str:
    """Keycloak's own sign-out, confirmed on its page; the page it ends on."""
    confirm = await browser.follow(keycloak.issuer + "/protocol/openid-connect/logout")
    done = await browser.submit(confirm)
    page = await done.text()
    assert done.status == 200, page[:2000]
    assert done.url.port == keycloak.port
    return page


async def _only_one_left(
    keycloak: Keycloak, leaving: KeycloakBrowser, staying: KeycloakBrowser
) -> None:
    gone = await leaving.http.get(keycloak.sp_base + "/app/page", headers=JSON)
    assert gone.status == 401
    kept = await staying.http.get(keycloak.sp_base + "/app/page", headers=JSON)
    assert kept.status == 200


async def test_oidc_back_channel_logout_from_keycloak(keycloak, gate):
    """Two browsers sign in over OIDC; one signs out at Keycloak, whose server POSTs a
    logout token naming that sign-in's `sid` to authgate's back-channel endpoint before
    it shows its page. That session ends, the other one stays."""
    browsers, user_id = await _two_sign_ins(keycloak, gate, "kco")
    try:
        leaving, staying = browsers
        page = await _sign_out_at_keycloak(leaving, keycloak)
        assert "you are logged out" in page.lower(), page[:2000]
        assert iframe_sources(page) == []
        assert await gate[STATE].sessions.count_for_user(user_id) == 1, keycloak.log()
        await _only_one_left(keycloak, leaving, staying)
    finally:
        for browser in browsers:
            await browser.close()


async def test_oidc_front_channel_logout_from_keycloak(keycloak, gate):
    """Two browsers sign in over OIDC; one signs out at Keycloak, whose page frames
    authgate's front-channel URL with `iss` and that sign-in's `sid`. The other browser
    loading that URL changes nothing (its sign-in has another sid); the signing-out
    browser loading it ends its own session, and the answer may be framed by Keycloak."""
    browsers, user_id = await _two_sign_ins(keycloak, gate, "kcf")
    try:
        leaving, staying = browsers
        page = await _sign_out_at_keycloak(leaving, keycloak)
        frames = iframe_sources(page)
        assert len(frames) == 1, page[:3000]
        frame = URL(frames[0])
        assert str(frame.with_query(None)) == (
            keycloak.sp_base + "/_authgate/oidc/kcf/frontchannel-logout"
        )
        assert frame.query["iss"] == keycloak.issuer and frame.query["sid"]
        foreign = await staying.http.get(frame, headers={"Sec-Fetch-Dest": "iframe"})
        assert foreign.status == 200
        assert "frame-ancestors 'none'" in foreign.headers["Content-Security-Policy"]
        assert await gate[STATE].sessions.count_for_user(user_id) == 2
        own = await leaving.http.get(frame, headers={"Sec-Fetch-Dest": "iframe"})
        assert own.status == 200
        csp = own.headers["Content-Security-Policy"]
        assert f"frame-ancestors {keycloak.origin}" in csp
        assert await gate[STATE].sessions.count_for_user(user_id) == 1, keycloak.log()
        await _only_one_left(keycloak, leaving, staying)
    finally:
        for browser in browsers:
            await browser.close()
