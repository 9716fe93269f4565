"""The admin API's OpenAPI file is served, valid, complete, and true to what the API answers.

Three checks keep the document from drifting: it validates as OpenAPI 3.1;
its paths and methods are exactly the admin API routes the app registers;
and real answers of every call (success and each documented refusal) match
the schema the document gives for that status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from authgate.app import create_app
from authgate.identity import Identity
from authgate.settings import Settings
from authgate.web.state import STATE
from tests.conftest import sign_in

TOKEN = "3f6b1c9e2d5a8f0b4c7e1a9d2f6b0c3e8a5d1f7b2c9e6a0d4f8b3c7e1a5d9f2b"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
METHODS = {"get", "post", "put", "patch", "delete"}
ALICE = Identity(
    connection="corp", subject="sub-alice", email="alice@example.com", email_verified=True,
    name="Alice", groups=("Engineering",),
)  # fmt: skip


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> TestClient:
    return await aiohttp_client(create_app(settings_factory(admin={"token": TOKEN})))


async def document(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/_authgate/admin/api/openapi.json", headers=AUTH)
    assert resp.status == 200
    return await resp.json()


def schema_of(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """The JSON schema the document gives for one answer, with its components to resolve in."""
    answer = doc["paths"][path][method]["responses"][str(status)]
    if "$ref" in answer:
        answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema = answer["content"]["application/json"]["schema"]
    return {**schema, "components": doc["components"]}


async def assert_documented(doc: dict[str, Any], path: str, method: str, resp: Any) -> None:
    body = await resp.json()
    Draft202012Validator(schema_of(doc, path, method, resp.status)).validate(body)


async def test_the_document_is_valid_openapi_and_names_this_prefix(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
):
    settings = settings_factory(admin={"token": TOKEN}, prefix="/sso")
    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/sso/admin/api/openapi.json", headers=AUTH)
    doc = await resp.json()
    validate(doc)
    assert doc["servers"] == [{"url": "/sso/admin/api"}]
    assert resp.headers["Cache-Control"] == "no-store"


async def test_the_document_needs_an_admin(client: TestClient):
    resp = await client.get(
        "/_authgate/admin/api/openapi.json", headers={"Accept": "application/json"}
    )
    assert resp.status == 401
    forged = await client.get(
        "/_authgate/admin/api/openapi.json", headers={"Authorization": "Bearer agadm_forged"}
    )
    assert forged.status == 401
    assert (await forged.json())["error"] == "invalid_token"


async def test_every_route_is_documented_and_every_documented_call_exists(client: TestClient):
    doc = await document(client)
    base = doc["servers"][0]["url"]
    templates = (
        (route.method.lower(), info.get("formatter") or info.get("path", ""))
        for route in client.app.router.routes()
        for info in [route.resource.get_info()]
    )
    routes = {
        (method, template.removeprefix(base))
        for method, template in templates
        if template.startswith(base + "/") and method in METHODS
    }
    documented = {
        (method, path)
        for path, operations in doc["paths"].items()
        for method in operations
        if method in METHODS
    }
    assert routes == documented


async def test_every_answer_matches_its_documented_schema(client: TestClient):
    doc = await document(client)
    st = client.app[STATE]
    await sign_in(client, ALICE)
    alice = await st.users.by_email("alice@example.com")
    admin = await st.users.update(alice, replace(alice, roles=("admin",)))
    api = "/_authgate/admin/api"
    calls = [
        ("/status", "get", await client.get(api + "/status", headers=AUTH)),
        ("/users", "get", await client.get(api + "/users?q=ali", headers=AUTH)),
        ("/users", "get", await client.get(api + "/users?limit=0", headers=AUTH)),
        ("/users/{user_id}", "get", await client.get(f"{api}/users/{admin.id}", headers=AUTH)),
        ("/users/{user_id}", "get", await client.get(f"{api}/users/nobody", headers=AUTH)),
        (
            "/users/{user_id}",
            "patch",
            await client.patch(
                f"{api}/users/{admin.id}", json={"roles": ["admin", "editor"]}, headers=AUTH
            ),
        ),
        (
            "/users/{user_id}",
            "patch",
            await client.patch(f"{api}/users/{admin.id}", json={"bogus": 1}, headers=AUTH),
        ),
        (
            "/users/{user_id}/retire",
            "post",
            await client.post(f"{api}/users/{admin.id}/retire", headers=AUTH),
        ),
        (
            "/users/{user_id}/revoke-sessions",
            "post",
            await client.post(f"{api}/users/{admin.id}/revoke-sessions", headers=AUTH),
        ),
        (
            "/connections/{conn_id}/users/import",
            "post",
            await client.post(
                f"{api}/connections/corp/users/import",
                data=b"ExternalId,Email\nbob-1,bob@example.com\n,\n",
                headers={**AUTH, "Content-Type": "text/csv"},
            ),
        ),
        (
            "/connections/{conn_id}/users/import",
            "post",
            await client.post(f"{api}/connections/nope/users/import", data=b"x", headers=AUTH),
        ),
        (
            "/status",
            "get",
            await client.get(api + "/status", headers={"Accept": "application/json"}),
        ),
    ]
    statuses = []
    for path, method, resp in calls:
        await assert_documented(doc, path, method, resp)
        statuses.append(resp.status)
    assert statuses == [200, 200, 400, 200, 404, 200, 400, 409, 200, 200, 404, 401]


async def test_scim_token_answers_match_their_documented_schema(client: TestClient):
    doc = await document(client)
    api = "/_authgate/admin/api/connections"
    path = "/connections/{conn_id}/scim-tokens"
    made = await client.post(f"{api}/corp/scim-tokens", json={"description": "e"}, headers=AUTH)
    await assert_documented(doc, path, "post", made)
    await assert_documented(
        doc, path, "get", await client.get(f"{api}/corp/scim-tokens", headers=AUTH)
    )
    await assert_documented(
        doc, path, "post", await client.post(f"{api}/x/scim-tokens", headers=AUTH)
    )
    gone = await client.delete(f"{api}/corp/scim-tokens/nope", headers=AUTH)
    await assert_documented(doc, path + "/{token_id}", "delete", gone)
    assert [made.status, gone.status] == [201, 404]
