"""The development IdP's Your applications page against an authgate connection that refuses
IdP-initiated sign-in and has no single logout, over real HTTP.

The demo's own SAML connection allows both (tests/e2e/test_demo.py); here
the connection keeps authgate's defaults for IdP-initiated sign-in
(`allow_idp_initiated: false`) and turns single logout off, and the page's
own refusals are checked with their exact status and words.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from authgate.app import create_app
from authgate.devidp import PASSWORD, DevIdp, DevIdpConfig
from authgate.devidp import create_app as create_idp_app
from authgate.devidp.legacy_app import create_app as create_legacy_app
from authgate.keys import write_pair
from authgate.protocols.saml_config import SpEndpoints, sp_config, sp_metadata
from authgate.secrets import generate_key
from authgate.settings import SamlConnection, Settings, parse_settings
from authgate.web.state import STATE, State
from tests.servers import free_port, require_binary
from tests.simplesamlphp import HTML, Browser

CONN = "closed"
JSON = {"Accept": "application/json"}


@dataclass(frozen=True)
class Stack:
    gate_url: str
    idp_url: str
    sp_entity_id: str
    gate: State


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def _settings(tmp: Path, gate_url: str, idp_url: str, upstream_url: str) -> Settings:
    key, cert, master = tmp / "sp.key", tmp / "sp.crt", tmp / "master.key"
    write_pair(key, cert, "closed SP", bits=2048)
    master.write_text(generate_key())
    return parse_settings(
        {
            "public_url": gate_url,
            "upstream": {"url": upstream_url},
            "session": {"store": "memory"},
            "access": {"allowed_domains": ["example.com"]},
            "secrets": {"master_key_file": str(master)},
            "connections": [
                {
                    "id": CONN,
                    "name": "IdP-initiated off",
                    "type": "saml",
                    "idp_metadata_url": idp_url + "/saml/metadata",
                    "sp_keys": [{"key_file": str(key), "cert_file": str(cert)}],
                    "sign_requests": True,
                    "name_id_format": "persistent",
                    "slo": False,
                }
            ],
        },
        "devidp-apps-test",
    )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    require_binary("xmlsec1")
    gate_port, idp_port, upstream_port = free_port(), free_port(), free_port()
    gate_url, idp_url = f"http://127.0.0.1:{gate_port}", f"http://127.0.0.1:{idp_port}"
    settings = _settings(tmp_path, gate_url, idp_url, f"http://127.0.0.1:{upstream_port}")
    conn = settings.connection(CONN)
    assert isinstance(conn, SamlConnection)
    endpoints = SpEndpoints.build(conn, settings)
    config = DevIdpConfig(
        base_url=idp_url, service_providers=(sp_metadata(sp_config(conn, endpoints)),)
    )
    idp = await asyncio.to_thread(DevIdp.create, config, tmp_path)
    runners = [await _serve(create_idp_app(idp), idp_port)]
    runners.append(await _serve(create_legacy_app(gate_url, "/_authgate"), upstream_port))
    gate = create_app(settings)
    runners.append(await _serve(gate, gate_port))
    try:
        yield Stack(gate_url, idp_url, endpoints.entity_id, gate[STATE])
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    client = Browser()
    yield client
    await client.close()


async def _form_token(browser: Browser, stack: Stack) -> str:
    page = await browser.follow(f"{stack.idp_url}/apps")
    token = re.search(r'name="form_token" value="([^"]+)"', await page.text())
    assert token, "no form token on the apps page"
    return token.group(1)


async def apps_form(
    browser: Browser,
    stack: Stack,
    action: str,
    data: dict[str, str],
    origin: str | None = "",
    token: str | None = None,
) -> aiohttp.ClientResponse:
    """A form of the Your applications page; by default sent as from the IdP's own page."""
    fields = {"form_token": await _form_token(browser, stack) if token is None else token}
    headers = dict(HTML)
    if origin is not None:
        headers["Origin"] = origin or stack.idp_url
    answer = await browser.http.post(
        f"{stack.idp_url}{action}",
        data={**fields, **data},
        headers=headers,
        allow_redirects=False,
    )
    if answer.status == 302:
        return await browser.follow(answer.headers["Location"], str(answer.url))
    return answer


def message(page: str) -> str:
    found = re.search(r'<p id="message">(.*?)</p>', page, re.S)
    assert found, page[:2000]
    return unescape(found.group(1))


async def test_idp_initiated_sign_in_to_a_connection_that_does_not_allow_it_is_refused(
    stack: Stack, browser: Browser
):
    login = await apps_form(
        browser, stack, "/apps/sign-in", {"sp": stack.sp_entity_id, "relay_state": "/report"}
    )
    assert login.url.path == "/login"
    signed = await browser.http.post(
        f"{stack.idp_url}/login",
        data={"txn": login.url.query["txn"], "email": "bob@example.com", "password": PASSWORD},
        allow_redirects=False,
    )
    fields = dict(
        re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', await signed.text())
    )
    assert set(fields) == {"SAMLResponse", "RelayState"}
    refused = await browser.http.post(
        f"{stack.gate_url}/_authgate/saml/{CONN}/acs",
        data=fields,
        headers=JSON,
        allow_redirects=False,
    )
    body = await refused.json()
    assert (refused.status, body["error"]) == (400, "state_mismatch")
    status = await stack.gate.status.get(CONN)
    assert status["last_failure_reason"] == "state_mismatch"
    assert status["last_failure_correlation_id"] == body["correlation_id"]
    app = await browser.http.get(f"{stack.gate_url}/report", allow_redirects=False, headers=HTML)
    assert app.status == 302
    assert app.headers["Location"].startswith("/_authgate/login?rd=")


@pytest.mark.parametrize(
    ("action", "what"), [("/apps/sign-in", "start the sign-in"), ("/apps/sign-out", "sign out")]
)
async def test_the_forms_are_refused_unless_sent_from_the_idp_page_with_its_token(
    stack: Stack, browser: Browser, action: str, what: str
):
    data = {"sp": stack.sp_entity_id, "relay_state": "/"}
    for origin, token in [(None, None), ("https://evil.example", None)]:
        page = await apps_form(browser, stack, action, data, origin=origin, token=token)
        assert page.status == 403
        assert message(await page.text()) == (
            "This form must be sent from the development IdP's own page: open"
            f" {stack.idp_url}/apps and {what} there."
        )
    page = await apps_form(browser, stack, action, data, token="stale")
    assert page.status == 403
    assert message(await page.text()) == (
        "The form's token is missing or out of date (the IdP may have restarted):"
        f" reload the IdP's page and {what} again."
    )


@pytest.mark.parametrize(
    ("sp", "relay_state", "refusal"),
    [
        (
            None,
            "/" + "a" * 80,
            "The target path is longer than 80 characters, the most a SAML RelayState carries.",
        ),
        ("http://127.0.0.1:9/unknown", "/", "This IdP trusts no such SAML service provider."),
    ],
)
async def test_a_long_target_path_or_an_unknown_sp_is_refused(
    stack: Stack, browser: Browser, sp: str | None, relay_state: str, refusal: str
):
    data = {"sp": sp or stack.sp_entity_id, "relay_state": relay_state}
    page = await apps_form(browser, stack, "/apps/sign-in", data)
    assert page.status == 400
    assert message(await page.text()) == refusal


async def test_sign_out_everywhere_says_an_sp_without_a_soap_logout_url_was_not_told(
    stack: Stack, browser: Browser
):
    start = await browser.follow(f"{stack.gate_url}/_authgate/saml/{CONN}/login?rd=%2Freport")
    assert start.url.path == "/login"
    signed = await browser.http.post(
        f"{stack.idp_url}/login",
        data={"txn": start.url.query["txn"], "email": "bob@example.com", "password": PASSWORD},
        allow_redirects=False,
    )
    assert (await browser.submit_auto_post(signed)).status == 200
    result = await apps_form(browser, stack, "/apps/sign-out", {})
    assert result.status == 200
    assert (
        f"<code>{stack.sp_entity_id}</code>: not told: its metadata lists no SOAP single"
        " logout URL" in unescape(await result.text())
    )
    app = await browser.http.get(f"{stack.gate_url}/report", allow_redirects=False, headers=HTML)
    assert app.status == 200
