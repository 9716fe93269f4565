"""The endpoint paths vendor documents fix: an ACS with no connection id, a Shibboleth SP's
ACS, several ACS URLs, a fixed SLO and metadata path, an OIDC `/redirect_uri`.

The IdP's POST must reach authgate, not the application, through both front
ends; the Destination and Recipient checks follow the configured URL; and a
path two connections would share is refused.
"""

from __future__ import annotations

from typing import Any

import pytest

from authgate.app import create_app
from authgate.identity import Identity
from authgate.session.memory import MemoryStore
from authgate.settings import ConfigError
from tests.conftest import UPSTREAM_HITS, make_settings, sign_in
from tests.fronts import FrontServer
from tests.integration.test_admin_connections import API, AUTH, _settings, create, saml_body
from tests.integration.test_saml_hostile import assertion, response
from tests.saml_gate import JSON, PUBLIC_URL, SamlBrowser
from tests.saml_idp import KeyPair, encode

EXTERNAL = "https://app.example.com"
INTERNAL = "https://app.corp.internal"
SHIBBOLETH = "/Shibboleth.sso/SAML2/POST"


def saml_conn(**paths: Any) -> dict[str, Any]:
    return {
        "id": "entra",
        "name": "Entra",
        "type": "saml",
        "idp": {
            "entity_id": "https://sts.windows.net/tenant/",
            "sso_url": "https://login.microsoftonline.com/tenant/saml2",
            "certificates": [KeyPair.create("vendor-paths").cert_b64],
        },
        **paths,
    }


async def post_to(browser: SamlBrowser, path: str, root: Any) -> Any:
    form = {"SAMLResponse": encode(root)}
    return await browser.gate.post(path, data=form, headers=JSON, allow_redirects=False)


async def test_a_response_posted_to_a_fixed_acs_path_signs_in_and_never_reaches_the_app(
    saml_gate, saml_idp, counted_upstream
):
    browser = await saml_gate(acs_urls=[SHIBBOLETH, f"{INTERNAL}/saml/acs"])
    rid = await browser.start()
    acs = PUBLIC_URL + SHIBBOLETH
    root = response(
        saml_idp, rid, saml_idp.sign(assertion(saml_idp, rid, recipient=acs)), destination=acs
    )
    resp = await post_to(browser, SHIBBOLETH, root)
    assert resp.status == 302, await resp.text()
    assert (await browser.whoami()).status == 200
    assert counted_upstream.app[UPSTREAM_HITS] == []


async def test_the_destination_must_be_the_acs_url_the_response_was_posted_to(
    saml_gate, saml_idp, counted_upstream
):
    browser = await saml_gate(acs_urls=[SHIBBOLETH, f"{INTERNAL}/saml/acs"])
    rid = await browser.start()
    default = PUBLIC_URL + "/_authgate/saml/corp/acs"
    root = response(
        saml_idp,
        rid,
        saml_idp.sign(assertion(saml_idp, rid, recipient=default)),
        destination=default,
    )
    resp = await post_to(browser, SHIBBOLETH, root)
    assert (resp.status, (await resp.json())["error"]) == (400, "audience_mismatch")
    assert (await browser.whoami()).status == 401


async def test_the_fixed_paths_are_authgates_and_the_metadata_lists_every_acs(
    aiohttp_client, counted_upstream
):
    upstream = str(counted_upstream.make_url("")).rstrip("/")
    settings = make_settings(
        upstream,
        connections=[
            saml_conn(
                acs_urls=[SHIBBOLETH, f"{INTERNAL}/saml/acs"],
                slo_path="/saml/slo",
                metadata_path="/saml/metadata",
            ),
            {
                "id": "okta",
                "name": "Okta",
                "type": "oidc",
                "issuer": "http://127.0.0.1:9",
                "client_id": "c",
                "client_secret": "s",
                "redirect_path": "/redirect_uri",
            },
        ],
    )
    client = await aiohttp_client(create_app(settings))
    metadata = await client.get("/saml/metadata")
    text = await metadata.text()
    assert metadata.status == 200, text
    assert f'Location="{EXTERNAL}{SHIBBOLETH}"' in text
    assert f'Location="{INTERNAL}/saml/acs"' in text
    assert 'index="1"' in text and 'index="2"' in text
    assert f'Location="{EXTERNAL}/saml/slo"' in text
    callback = await client.get("/redirect_uri", params={"state": "x", "code": "y"})
    assert callback.status == 400
    assert "state_" in await callback.text()
    assert counted_upstream.app[UPSTREAM_HITS] == []
    assert (await client.get("/_authgate/saml/entra/metadata")).status == 200
    assert (await client.get("/app")).status in (302, 401)


def test_a_path_two_connections_would_share_is_refused(counted_upstream):
    upstream = str(counted_upstream.make_url("")).rstrip("/")
    second = {**saml_conn(acs_urls=["/saml/acs"]), "id": "other"}
    with pytest.raises(ConfigError, match="path /saml/acs is taken by entra"):
        make_settings(upstream, connections=[saml_conn(acs_urls=["/saml/acs"]), second])


@pytest.mark.parametrize("value", ["//evil.example/acs", "/acs?x=1", "ftp://host/acs", "acs"])
def test_a_malformed_path_is_refused(counted_upstream, value):
    upstream = str(counted_upstream.make_url("")).rstrip("/")
    with pytest.raises(ConfigError, match="acs_urls"):
        make_settings(upstream, connections=[saml_conn(acs_urls=[value])])


async def test_an_admin_made_connection_cannot_take_a_path_already_answered(
    aiohttp_client, settings_factory, redis_url, master_key
):
    base = _settings(settings_factory, redis_url, master_key)
    client = await aiohttp_client(create_app(base))
    assert (await create(client, saml_body(id="one", acs_urls=["/saml/acs"]))).status == 201
    resp = await create(client, saml_body(id="two", acs_urls=["/saml/acs"]))
    body = await resp.json()
    assert (resp.status, body["error"], body["field"]) == (409, "path_claimed", "acs_urls")
    metadata = await client.get(f"{API}/one", headers=AUTH)
    assert (await metadata.json())["sp"]["acs_url"] == "https://app.example.com/saml/acs"


async def test_a_signed_in_get_of_a_fixed_path_is_not_proxied_by_the_fast_path(
    aiohttp_client, counted_upstream
):
    upstream = str(counted_upstream.make_url("")).rstrip("/")
    settings = make_settings(upstream, connections=[saml_conn(metadata_path="/saml/metadata")])
    client = await aiohttp_client(FrontServer(create_app(settings, MemoryStore())))
    identity = Identity(connection="entra", subject="s", email="a@example.com", email_verified=True)
    await sign_in(client, identity)
    assert (await client.get("/app")).status == 200
    metadata = await client.get("/saml/metadata")
    assert metadata.status == 200
    assert "EntityDescriptor" in await metadata.text()
    assert counted_upstream.app[UPSTREAM_HITS] == ["/app"]


@pytest.mark.parametrize("fast", [True, False])
async def test_under_a_prefix_the_app_shares_only_authgates_routes_are_claimed(
    aiohttp_client, counted_upstream, fast
):
    upstream = str(counted_upstream.make_url("")).rstrip("/")
    settings = make_settings(upstream, prefix="/api")
    client = await aiohttp_client(FrontServer(create_app(settings, MemoryStore()), fast=fast))
    await sign_in(client)
    orders = await client.get("/api/orders?page=2", headers={"Accept": "application/json"})
    assert orders.status == 200, await orders.text()
    assert counted_upstream.app[UPSTREAM_HITS] == ["/api/orders"]
    assert (await client.get("/api/healthz")).status == 200
    assert counted_upstream.app[UPSTREAM_HITS] == ["/api/orders"]


async def test_under_authgates_own_prefix_an_unknown_path_is_its_404(
    aiohttp_client, counted_upstream
):
    upstream = str(counted_upstream.make_url("")).rstrip("/")
    client = await aiohttp_client(create_app(make_settings(upstream), MemoryStore()))
    await sign_in(client)
    resp = await client.get("/_authgate/orders", headers={"Accept": "application/json"})
    assert resp.status == 404
    assert counted_upstream.app[UPSTREAM_HITS] == []
