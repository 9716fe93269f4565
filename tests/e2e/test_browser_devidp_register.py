"""Registering a service provider on the development IdP's page, in headless Chromium.

As a newcomer does after creating a connection in authgate's admin UI: the
IdP runs on a free loopback port, a stand-in SP (authgate's own SAML SP
configuration and metadata) runs beside it, and the browser types the SP's
metadata URL or redirect URI into the IdP's page. The IdP must then answer
that SP's signed AuthnRequest with a response authgate's validator accepts,
and run the code flow for the new client; a cross-origin page posting the
same form (even with the right token) is refused. Pages are saved under
test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from authgate.devidp import DevIdp, DevIdpConfig, create_app
from authgate.devidp.oidc import s256
from authgate.devidp.users import find
from authgate.protocols.saml_crypto import XmlSec
from authgate.protocols.saml_metadata import parse_idp_metadata
from authgate.protocols.saml_validate import AcsPolicy, validate_response
from tests.browser import async_chromium, screenshot_path
from tests.servers import require_binary
from tests.unit.test_devidp_saml import Sp

CONN = "runtime"
VERIFIER = "b" * 64


@dataclass
class SpSide:
    """What the stand-in SP serves and what reached it."""

    metadata: bytes = b""
    posts: list[dict[str, str]] = field(default_factory=list)
    attack: str = ""


SIDE: web.AppKey[SpSide] = web.AppKey("side", SpSide)


async def _metadata(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[SIDE].metadata, content_type="application/samlmetadata+xml"
    )


async def _acs(request: web.Request) -> web.Response:
    form = await request.post()
    request.app[SIDE].posts.append({k: str(v) for k, v in form.items()})
    return web.Response(text="<h1>ACS received the response</h1>", content_type="text/html")


async def _callback(request: web.Request) -> web.Response:
    return web.Response(text="<h1>Callback reached</h1>", content_type="text/html")


async def _attack(request: web.Request) -> web.Response:
    return web.Response(text=request.app[SIDE].attack, content_type="text/html")


@dataclass(frozen=True)
class Stack:
    idp: DevIdp
    idp_url: str
    sp: Sp
    sp_url: str
    side: SpSide


@pytest.fixture
async def stack(tmp_path: Path, aiohttp_server: Callable[..., Any]) -> AsyncIterator[Stack]:
    require_binary("xmlsec1")
    side = SpSide()
    sp_app = web.Application()
    sp_app[SIDE] = side
    sp_app.router.add_get(f"/_authgate/saml/{CONN}/metadata", _metadata)
    sp_app.router.add_post(f"/_authgate/saml/{CONN}/acs", _acs)
    sp_app.router.add_get(f"/_authgate/oidc/{CONN}/callback", _callback)
    sp_app.router.add_get("/attack", _attack)
    sp_server: TestServer = await aiohttp_server(sp_app)
    sp_url = str(sp_server.make_url("")).rstrip("/")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    idp_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    idp = await asyncio.to_thread(DevIdp.create, DevIdpConfig(base_url=idp_url), tmp_path)
    sp = await asyncio.to_thread(Sp, tmp_path, CONN, sp_url, idp_url)
    side.metadata = sp.metadata
    runner = web.AppRunner(create_app(idp), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield Stack(idp, idp_url, sp, sp_url, side)
    finally:
        await runner.cleanup()


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with async_chromium() as browser:
        yield await browser.new_page()


async def sign_in(page: Page, email: str) -> None:
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Sign in to continue")
    await page.locator(f"input[type=radio][value='{email}']").check()
    await page.get_by_label("Password").fill("demo")
    await page.locator("#sign-in").click()


async def test_an_sp_registered_by_metadata_url_gets_a_signed_response(stack: Stack, page: Page):
    await page.goto(stack.idp_url + "/")
    await page.get_by_label("SP metadata URL").fill(
        f"{stack.sp_url}/_authgate/saml/{CONN}/metadata"
    )
    await page.screenshot(path=screenshot_path("devidp-register-form"), full_page=True)
    await page.locator("#register-saml-submit").click()
    await expect(page.locator("#sp-entity-id")).to_have_text(stack.sp.endpoints.entity_id)
    await expect(page.locator("#sp-acs")).to_contain_text(stack.sp.endpoints.acs_url)
    await expect(page.locator("#idp-metadata-url")).to_have_text(stack.idp_url + "/saml/metadata")
    await page.screenshot(path=screenshot_path("devidp-registered-saml"), full_page=True)
    query = urlencode(stack.sp.redirect(stack.sp.authn_request(), relay="/after"))
    await page.goto(f"{stack.idp_url}/saml/sso?{query}")
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Sign in to continue to {stack.sp.endpoints.entity_id}"
    )
    await sign_in(page, "alice@example.com")
    await expect(page.get_by_role("heading", level=1)).to_have_text("ACS received the response")
    [posted] = stack.side.posts
    meta = parse_idp_metadata(stack.idp.saml.metadata())
    policy = AcsPolicy(
        idp_entity_id=meta.entity_id,
        idp_certs=meta.signing_certs,
        sp_entity_id=stack.sp.endpoints.entity_id,
        acs_url=stack.sp.endpoints.acs_url,
    )
    data = validate_response(posted["SAMLResponse"], policy, XmlSec(), time.time())
    alice = find("alice@example.com")
    assert alice is not None
    assert (data.name_id, posted["RelayState"]) == (alice.id, "/after")


async def test_an_oidc_client_registered_on_the_page_is_accepted_at_authorize(
    stack: Stack, page: Page
):
    callback = f"{stack.sp_url}/_authgate/oidc/{CONN}/callback"
    await page.goto(stack.idp_url + "/")
    await page.get_by_label("Redirect URI").fill(callback)
    await page.locator("#register-oidc-submit").click()
    await expect(page.locator("#oidc-issuer")).to_have_text(stack.idp_url + "/oidc")
    await page.screenshot(path=screenshot_path("devidp-registered-oidc"), full_page=True)
    client_id = await page.locator("#oidc-client-id").inner_text()
    secret = await page.locator("#oidc-client-secret").inner_text()
    params = {
        "client_id": client_id,
        "redirect_uri": callback,
        "response_type": "code",
        "scope": "openid email",
        "state": "s1",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
    }
    await page.goto(f"{stack.idp_url}/oidc/authorize?{urlencode(params)}")
    await sign_in(page, "dave@partner.example")
    await expect(page).to_have_url(re.compile(re.escape(callback) + r"\?code="))
    code = re.search(r"[?&]code=([^&]+)", page.url)
    assert code is not None
    form = {
        "grant_type": "authorization_code",
        "code": code.group(1),
        "redirect_uri": callback,
        "code_verifier": VERIFIER,
    }
    async with aiohttp.ClientSession() as http:
        auth = aiohttp.BasicAuth(client_id, secret)
        async with http.post(stack.idp_url + "/oidc/token", data=form, auth=auth) as resp:
            assert (resp.status, "id_token" in await resp.json()) == (200, True)


async def test_a_cross_origin_page_cannot_register_even_with_the_token(stack: Stack, page: Page):
    stack.side.attack = (
        f'<form id="f" method="post" action="{stack.idp_url}/register/oidc">'
        f'<input name="form_token" value="{stack.idp.form_token}">'
        '<input name="redirect_uri" value="http://127.0.0.1:9/steal"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    before = dict(stack.idp.oidc.clients)
    await page.goto(stack.sp_url + "/attack")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Registration refused")
    await expect(page.locator("#message")).to_have_text(
        "This form must be sent from the development IdP's own page: open"
        f" {stack.idp_url}/ and register there."
    )
    await page.screenshot(path=screenshot_path("devidp-register-refused"), full_page=True)
    assert stack.idp.oidc.clients == before
