"""SCIM tokens through the admin API: made for one connection, shown once, revoked at once.

The token the API hands out is used against the real SCIM endpoint, as Entra's
provisioning service would use it after an admin pasted it into "Secret Token".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from authgate.app import create_app
from authgate.web.state import STATE
from tests.scim_support import SCIM, SCIM_JSON, events, provisioning_settings

TOKEN = "7c1e4a9d2f6b0e3c8a5d1f9b2e6c0a4d7f3b8e1c5a9d2f6b0e4c8a1d5f9b3e7c"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
API = "/_authgate/admin/api/connections"


def audit_file(client: TestClient) -> Path:
    return Path(client.app[STATE].settings.audit.output)


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], tmp_path) -> TestClient:
    settings = provisioning_settings(tmp_path / "audit.jsonl", admin={"token": TOKEN})
    return await aiohttp_client(create_app(settings))


async def scim_status(client: TestClient, secret: str) -> int:
    headers = {"Authorization": f"Bearer {secret}", "Accept": SCIM_JSON}
    return (await client.get(SCIM + "/Users", headers=headers)).status


async def test_a_token_made_in_the_api_provisions_until_it_is_revoked(client: TestClient):
    made = await client.post(
        f"{API}/corp/scim-tokens", json={"description": "Entra provisioning"}, headers=AUTH
    )
    assert made.status == 201
    body = await made.json()
    assert body["connection"] == "corp"
    assert body["scim_base_url"] == "https://app.example.com/_authgate/scim/v2"
    secret = body["token"]
    assert await scim_status(client, secret) == 200

    listed = await (await client.get(f"{API}/corp/scim-tokens", headers=AUTH)).json()
    assert [t["id"] for t in listed["tokens"]] == [body["id"]]
    assert listed["tokens"][0]["description"] == "Entra provisioning"
    assert secret not in str(listed)
    other = await (await client.get(f"{API}/partner/scim-tokens", headers=AUTH)).json()
    assert other == {"tokens": []}

    wrong_place = await client.delete(f"{API}/partner/scim-tokens/{body['id']}", headers=AUTH)
    assert wrong_place.status == 404
    assert (await wrong_place.json())["error"] == "unknown_token"
    assert await scim_status(client, secret) == 200

    gone = await client.delete(f"{API}/corp/scim-tokens/{body['id']}", headers=AUTH)
    assert gone.status == 204
    assert await scim_status(client, secret) == 401
    again = await client.delete(f"{API}/corp/scim-tokens/{body['id']}", headers=AUTH)
    assert again.status == 404

    seen = events(audit_file(client), "admin.scim")
    assert [e["event"] for e in seen] == [
        "admin.scim_token.created",
        "admin.scim_tokens.listed",
        "admin.scim_tokens.listed",
        "admin.scim_token.revoked",
    ]
    assert secret not in audit_file(client).read_text()


async def test_an_empty_body_makes_a_token_without_description(client: TestClient):
    made = await client.post(f"{API}/corp/scim-tokens", headers=AUTH)
    assert made.status == 201
    assert (await made.json())["description"] == ""


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"descr": "x"}, "descr: not a field of this request"),
        ({"description": 7}, "description: expected text of at most 200 characters"),
        ({"description": "x" * 201}, "description: expected text of at most 200 characters"),
        (["x"], "the body must be a JSON object"),
    ],
)
async def test_bad_requests_name_the_field_and_make_nothing(client: TestClient, body, problem):
    resp = await client.post(f"{API}/corp/scim-tokens", json=body, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["message"].startswith(problem)
    listed = await (await client.get(f"{API}/corp/scim-tokens", headers=AUTH)).json()
    assert listed == {"tokens": []}


async def test_an_unknown_connection_gets_no_token(client: TestClient):
    resp = await client.post(f"{API}/nope/scim-tokens", headers=AUTH)
    assert resp.status == 404
    assert (await resp.json())["error"] == "unknown_connection"
    assert (await client.get(f"{API}/nope/scim-tokens", headers=AUTH)).status == 404


async def test_without_an_admin_there_is_no_token(client: TestClient):
    resp = await client.post(f"{API}/corp/scim-tokens", headers={"Accept": "application/json"})
    assert resp.status == 401
