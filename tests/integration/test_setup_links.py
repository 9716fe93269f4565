"""Setup links: one connection's SP values, IdP form and test sign-in; never anything else.

The scope is checked by trying every admin route the app registers with the
link's secret, as a bearer token and as a cookie; the holder's form is
checked to change the IdP side only.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from authgate.app import create_app
from authgate.tokens import SetupLinks
from authgate.web.state import STATE
from tests.integration.test_admin_connections import (
    API,
    AUTH,
    _certificate,
    _settings,
    by_hand,
    create,
    saml_body,
)

SAME_ORIGIN = {"Origin": "https://app.example.com", "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], settings_factory, redis_url, master_key, tmp_path: Path
) -> TestClient:
    settings = _settings(
        settings_factory, redis_url, master_key, audit={"output": str(tmp_path / "audit.jsonl")}
    )
    client = await aiohttp_client(create_app(settings))
    assert (await create(client, saml_body(id="acme"))).status == 201
    return client


async def make_link(client: TestClient, **body: Any) -> dict[str, Any]:
    resp = await client.post(f"{API}/acme/setup-links", json=body, headers=AUTH)
    assert resp.status == 201, await resp.text()
    return await resp.json()


def path_of(link: dict[str, Any]) -> str:
    return link["url"].removeprefix("https://app.example.com")


def events(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


async def test_the_holder_sees_the_sp_values_and_sets_the_idp_side(client, tmp_path):
    link = await make_link(client, valid_for_hours=2, description="Acme IT")
    assert link["connection"] == "acme" and link["expires_at"]
    page = await client.get(path_of(link))
    text = await page.text()
    assert page.status == 200
    assert "https://app.example.com/_authgate/saml/acme/acs" in text
    assert "Set up single sign-on" in text
    form = {
        "version": "1",
        "idp_entity_id": "https://idp.acme.example/entity",
        "idp_sso_url": "https://idp.acme.example/sso",
        "idp_certificate": _certificate(365, ca=False),
        "name": "Renamed by the holder",
        "domains": "evil.example",
    }
    resp = await client.post(path_of(link), data=form, headers=SAME_ORIGIN, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    conn = client.app[STATE].connections.get("acme")
    assert conn.version == 2 and conn.name == "Acme Entra" and conn.settings.domains == []
    assert conn.settings.idp.entity_id == "https://idp.acme.example/entity"
    assert conn.settings.idp_metadata_public_only
    start = await client.get(path_of(link) + "/test-signin", allow_redirects=False)
    assert start.status == 302
    assert start.headers["Location"].startswith("https://idp.acme.example/sso?SAMLRequest=")
    used = [e["action"] for e in events(tmp_path) if e["event"] == "admin.setup_link.used"]
    assert used == ["viewed", "idp_changed", "test_signin"]
    updated = next(e for e in events(tmp_path) if e["event"] == "admin.connection.updated")
    assert updated["actor"] == f"setup-link:{link['id']}"


async def test_the_holder_form_refuses_a_post_from_another_site(client):
    link = await make_link(client)
    form = {"version": "1", "idp_metadata_url": "https://idp.example/m"}
    foreign = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    resp = await client.post(path_of(link), data=form, headers=foreign)
    assert resp.status == 403
    assert "cross_origin_request" in await resp.text()
    assert client.app[STATE].connections.get("acme").version == 1


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        ({"version": "1"}, "give the metadata URL, the metadata, or the IdP"),
        (
            {"version": "1", "idp_metadata_xml": "<not-metadata"},
            "unreadable metadata",
        ),
        ({"version": "7", "idp_entity_id": "x"}, "was changed by someone else"),
    ],
    ids=["nothing given", "unusable metadata", "stale version"],
)
async def test_a_refused_holder_form_is_shown_again_with_its_problem(client, form, problem):
    link = await make_link(client)
    page = await client.post(path_of(link), data=form, headers=SAME_ORIGIN)
    text = await page.text()
    assert page.status == 200, text[:500]
    assert problem in text and "setup-saved" not in text
    assert client.app[STATE].connections.get("acme").version == 1


@pytest.mark.parametrize("how", ["revoked", "expired", "forged"])
async def test_a_revoked_expired_or_forged_link_opens_nothing(client, how):
    if how == "expired":
        _, secret = await SetupLinks(client.app[STATE].kv).create("acme", "", ttl=0.2)
        await asyncio.sleep(0.3)
    elif how == "revoked":
        link = await make_link(client)
        secret = path_of(link).rsplit("/", 1)[1]
        resp = await client.delete(f"{API}/acme/setup-links/{link['id']}", headers=AUTH)
        assert resp.status == 204
    else:
        secret = "agsetup_" + "A" * 43
    for path in ("", "/test-signin"):
        resp = await client.get(f"/_authgate/setup/{secret}{path}", headers={"Accept": "text/html"})
        assert resp.status == 403
        text = await resp.text()
        assert "setup_link_invalid" in text and secret not in text
    resp = await client.post(
        f"/_authgate/setup/{secret}", data={"version": "1"}, headers=SAME_ORIGIN
    )
    assert resp.status == 403


async def test_a_link_opens_no_admin_route(client):
    link = await make_link(client)
    secret = path_of(link).rsplit("/", 1)[1]
    admin_paths = {
        (route.method, re.sub(r"\{[^}]+\}", "acme", route.resource.canonical))
        for route in client.app.router.routes()
        if route.resource is not None and "/admin" in route.resource.canonical
    }
    assert len(admin_paths) > 20
    for method, path in sorted(admin_paths):
        as_bearer = await client.request(
            method,
            path,
            headers={"Authorization": f"Bearer {secret}", "Accept": "application/json"},
        )
        assert as_bearer.status == 401, (method, path)
        client.session.cookie_jar.update_cookies({"authgate": secret})
        as_cookie = await client.request(
            method, path, headers={"Accept": "application/json", **SAME_ORIGIN}
        )
        client.session.cookie_jar.clear()
        assert as_cookie.status in (401, 302), (method, path, as_cookie.status)


async def test_a_link_is_for_one_connection_and_only_an_admin_made_one(client):
    assert (await create(client, by_hand(_certificate(365, ca=False)))).status == 201
    link = await make_link(client)
    other = await client.get(f"{API}/hand/setup-links", headers=AUTH)
    assert (await other.json())["setup_links"] == []
    listed = await (await client.get(f"{API}/acme/setup-links", headers=AUTH)).json()
    assert [x["id"] for x in listed["setup_links"]] == [link["id"]]
    resp = await client.post(f"{API}/corp/setup-links", json={}, headers=AUTH)
    assert (resp.status, (await resp.json())["error"]) == (409, "managed_by_config")
    resp = await client.post(f"{API}/acme/setup-links", json={"valid_for_hours": 0}, headers=AUTH)
    body = await resp.json()
    assert (resp.status, body["field"]) == (400, "valid_for_hours")
