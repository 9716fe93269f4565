"""Organization admins: a session with `admin.organization_role` and an organization sees
and changes only that organization's connections and users; everything else is a 404, as
if it did not exist."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from authgate.app import create_app
from authgate.identity import Identity
from authgate.web.state import STATE
from tests.conftest import sign_in
from tests.integration.test_admin_connections import API, AUTH, _settings, create, saml_body

JSON = {"Accept": "application/json", "Origin": "https://app.example.com"}


@pytest.fixture
async def client(aiohttp_client, settings_factory, redis_url, master_key) -> TestClient:
    client = await aiohttp_client(create_app(_settings(settings_factory, redis_url, master_key)))
    for conn_id, org in (("acme-sso", "acme"), ("globex-sso", "globex")):
        body = saml_body(id=conn_id, organization=org)
        assert (await create(client, body)).status == 201
    return client


async def org_admin(client: TestClient, organization: str = "acme") -> None:
    """Signed in as acme's admin; the bearer header of the other requests is not sent."""
    identity = Identity(
        connection="acme-sso", subject="ann", email="ann@acme.example", email_verified=True
    )
    await sign_in(client, identity, roles=("org-admin",), organization=organization)


async def user_of(client: TestClient, conn_id: str, email: str) -> str:
    identity = Identity(connection=conn_id, subject=email, email=email, email_verified=True)
    user = await client.app[STATE].users.admit(identity, "jit")
    return user.id


async def test_an_organization_admin_sees_only_its_connections_and_users(client):
    globex_user = await user_of(client, "globex-sso", "gus@globex.example")
    await org_admin(client)
    listed = await (await client.get(API, headers=JSON)).json()
    assert [c["id"] for c in listed["connections"]] == ["acme-sso"]
    users = await (await client.get("/_authgate/admin/api/users", headers=JSON)).json()
    assert [u["email"] for u in users["users"]] == ["ann@acme.example"]
    status = await (await client.get("/_authgate/admin/api/status", headers=JSON)).json()
    assert [c["id"] for c in status["connections"]] == ["acme-sso"]
    page = await client.get("/_authgate/admin/", headers={"Accept": "text/html"})
    text = await page.text()
    assert "acme-sso" in text and "globex-sso" not in text and "gus@globex" not in text
    for method, path in (
        ("GET", f"{API}/globex-sso"),
        ("PATCH", f"{API}/globex-sso"),
        ("DELETE", f"{API}/globex-sso"),
        ("POST", f"{API}/globex-sso/deactivate"),
        ("POST", f"{API}/globex-sso/setup-links"),
        ("GET", f"{API}/globex-sso/scim-tokens"),
        ("GET", f"/_authgate/admin/api/users/{globex_user}"),
        ("POST", f"/_authgate/admin/api/users/{globex_user}/retire"),
        ("GET", "/_authgate/admin/connections/globex-sso"),
    ):
        resp = await client.request(method, path, headers=JSON, json={"version": 1})
        assert resp.status == 404, (method, path, resp.status)
    assert client.app[STATE].connections.get("globex-sso").version == 1


async def test_an_organization_admin_creates_and_changes_only_its_own(client):
    await org_admin(client)
    resp = await client.post(API, json=saml_body(id="acme-two"), headers=JSON)
    assert resp.status == 201, await resp.text()
    assert client.app[STATE].connections.get("acme-two").settings.organization == "acme"
    resp = await client.post(API, json=saml_body(id="x", organization="globex"), headers=JSON)
    body = await resp.json()
    assert (resp.status, body["error"], body["field"]) == (403, "forbidden", "organization")
    move = {"version": 1, "organization": "globex"}
    resp = await client.patch(f"{API}/acme-two", json=move, headers=JSON)
    assert resp.status == 403
    assert client.app[STATE].connections.get("acme-two").settings.organization == "acme"


async def test_a_session_without_either_role_is_refused(client):
    identity = Identity(
        connection="acme-sso", subject="u", email="u@acme.example", email_verified=True
    )
    await sign_in(client, identity, roles=("viewer",), organization="acme")
    resp = await client.get(API, headers=JSON)
    assert resp.status == 403


async def test_the_org_role_without_an_organization_is_refused(client):
    identity = Identity(connection="corp", subject="v", email="v@example.com", email_verified=True)
    await sign_in(client, identity, roles=("org-admin",))
    assert (await client.get(API, headers=JSON)).status == 403


async def test_a_full_admin_still_sees_everything(client: Any):
    listed = await (await client.get(API, headers=AUTH)).json()
    assert {c["id"] for c in listed["connections"]} == {"corp", "acme-sso", "globex-sso"}
