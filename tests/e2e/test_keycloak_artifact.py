"""Interop with Keycloak's HTTP-Artifact binding: the browser brings a SAMLart, authgate resolves
it at Keycloak's ArtifactResolutionService with a signed ArtifactResolve over SOAP.

The realm's client `kca` (tests/fixtures/keycloak/realm.json) has
`saml.artifact.binding` on and its client signature required, so Keycloak
checks the ArtifactResolve's signature with authgate's SP certificate, and
signs the ArtifactResponse and the assertion. Keycloak's descriptor lists its
resolution endpoint (`/protocol/saml/resolve`), which authgate reaches over
plain HTTP only because it is on loopback. The Keycloak server, the browser
and the sign-in steps are those of test_keycloak_interop.py.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from authgate.app import create_app
from authgate.protocols.saml_artifact import parse_artifact
from authgate.settings import parse_settings
from authgate.web.state import STATE
from tests.e2e.test_keycloak_interop import _ready, saml_connection
from tests.keycloak import Keycloak, KeycloakBrowser, only_form

JSON = {"Accept": "application/json"}
LOGIN = "/_authgate/saml/kca/login"


@pytest.fixture
async def gate(
    keycloak: Keycloak, sp_keys: dict[str, Any], redis_url: str, counted_upstream: TestServer
) -> AsyncIterator[web.Application]:
    """authgate on the realm's SP port with `kca`: artifacts asked for, Keycloak's metadata."""
    connection = {
        **saml_connection("kca", keycloak, sp_keys),
        "response_binding": "artifact",
        # Keycloak signs the ArtifactResponse and the assertion, not the Response inside.
        "want_response_signed": False,
    }
    settings = parse_settings(
        {
            "public_url": keycloak.sp_base,
            "upstream": {"url": str(counted_upstream.make_url("")).rstrip("/")},
            "session": {"store": "redis", "redis": {"url": redis_url}},
            "audit": {"output": "stdout"},
            "connections": [connection],
        },
        "keycloak-artifact.yaml",
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", keycloak.sp_port, reuse_address=True).start()
    await _ready(keycloak)
    yield app
    await runner.cleanup()


@pytest.fixture
async def browser(keycloak: Keycloak) -> AsyncIterator[KeycloakBrowser]:
    client = KeycloakBrowser(keycloak)
    yield client
    await client.close()


async def artifact_from_keycloak(browser: KeycloakBrowser, keycloak: Keycloak) -> URL:
    """Start at authgate, sign in at Keycloak, and stop at the redirect that carries the
    SAMLart back to authgate's ACS (HTTP-Redirect: the AuthnRequest came that way)."""
    at_idp = await browser.follow(f"{keycloak.sp_base}{LOGIN}?rd=/app/page", typed=True)
    assert at_idp.url.port == keycloak.port, await at_idp.text()
    action, values = only_form(await at_idp.text())
    fields = {**values, "username": "alice", "password": "alice-password"}
    answer = await browser.http.post(
        at_idp.url.join(URL(action, encoded=True)), data=fields, allow_redirects=False
    )
    location = URL(answer.headers.get("Location", ""), encoded=True)
    while answer.status in (302, 303) and location.port == keycloak.port:
        answer = await browser.http.get(location, allow_redirects=False)
        location = URL(answer.headers.get("Location", ""), encoded=True)
    assert answer.status in (302, 303), (await answer.text())[:3000]
    assert str(location.with_query(None)) == f"{keycloak.sp_base}/_authgate/saml/kca/acs"
    return location


async def test_saml_sign_in_through_keycloak_by_artifact(browser, keycloak, gate, counted_upstream):
    acs = await artifact_from_keycloak(browser, keycloak)
    assert "SAMLResponse" not in acs.query
    artifact = parse_artifact(acs.query["SAMLart"])
    assert artifact.source_id == hashlib.sha1(keycloak.issuer.encode()).digest()
    page = await browser.follow(str(acs))
    assert page.status == 200, (await page.text())[:3000]
    assert page.url.path == "/app/page"
    headers = dict((await page.json())["headers"])
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-Auth-Connection"] == "kca"
    assert headers["X-Groups"] == "engineering"
    user = await gate[STATE].users.by_link("kca", "alice@example.com")
    assert user is not None and await gate[STATE].sessions.count_for_user(user.id) == 1


async def test_a_keycloak_artifact_is_used_once(browser, keycloak, gate):
    acs = await artifact_from_keycloak(browser, keycloak)
    assert (await browser.follow(str(acs))).url.path == "/app/page"
    other = KeycloakBrowser(keycloak)
    try:
        started = await other.http.get(keycloak.sp_base + LOGIN, allow_redirects=False)
        assert started.status == 302
        again = await other.http.get(acs, headers=JSON, allow_redirects=False)
        assert again.status == 400
        assert (await again.json())["error"] == "replayed"
    finally:
        await other.close()


async def test_an_artifact_keycloak_never_issued(browser, keycloak, gate):
    """Keycloak's SourceID and a made-up message handle: Keycloak answers the signed
    ArtifactResolve with an empty ArtifactResponse it does not sign (it signs for a known
    client only), which is refused before its emptiness is even looked at."""
    started = await browser.http.get(keycloak.sp_base + LOGIN, allow_redirects=False)
    assert started.status == 302
    source = hashlib.sha1(keycloak.issuer.encode()).digest()
    value = base64.b64encode(b"\x00\x04\x00\x00" + source + b"\x07" * 20).decode()
    resp = await browser.http.get(
        f"{keycloak.sp_base}/_authgate/saml/kca/acs", params={"SAMLart": value}, headers=JSON
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "signature_invalid"
