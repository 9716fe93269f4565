"""Hostile and malformed SCIM requests: each refused with the exact status and scimType."""

from __future__ import annotations

import json

import pytest

from authgate.app import create_app
from authgate.scim.app import UNIQUE
from authgate.scim.tokens import ScimTokens
from authgate.session.memory import MemoryStore
from authgate.web.state import STATE
from tests.scim_support import (
    SCIM,
    SCIM_JSON,
    bearer,
    events,
    fixture,
    provisioning_settings,
    scim_error,
    scim_json,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def audit(tmp_path):
    return tmp_path / "audit.jsonl"


@pytest.fixture
async def client(aiohttp_client, audit):
    settings = provisioning_settings(audit, scim={"max_body_size": 4096})
    return await aiohttp_client(create_app(settings, MemoryStore()))


async def create(client, headers, **changes):
    body = {**fixture("entra", "create_user"), **changes}
    return await scim_json(await client.post(SCIM + "/Users", json=body, headers=headers), 201)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer ", "Bearer agscim_not-a-real-token", "Basic YWRtaW46YWRtaW4=", "agscim_x"],
)
async def test_requests_without_a_valid_token_are_refused(client, audit, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get(SCIM + "/Users", headers=headers)
    await scim_error(response, 401, None)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authgate-scim"'
    assert events(audit, "scim.auth.failed")[-1]["path"] == "/_authgate/scim/v2/Users"
    assert await client.app[STATE].users.all_ids() == set()


async def test_a_revoked_token_or_one_of_a_removed_connection_is_refused(client):
    tokens = ScimTokens(client.app[STATE].kv)
    headers = await bearer(client)
    [info] = await tokens.list()
    assert await tokens.revoke(info.id)
    await scim_error(await client.get(SCIM + "/Users", headers=headers), 401, None)
    _, secret = await tokens.create("gone-connection")
    response = await client.get(SCIM + "/Users", headers={"Authorization": f"Bearer {secret}"})
    await scim_error(response, 401, None)


async def test_a_token_never_reaches_another_connections_users(client):
    corp, partner = await bearer(client, "corp"), await bearer(client, "partner")
    uid = (await create(client, corp))["id"]
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        body = fixture("entra", "disable_user_with_flag") if method == "PATCH" else None
        if method == "PUT":
            body = fixture("entra", "create_user")
        response = await client.request(method, f"{SCIM}/Users/{uid}", json=body, headers=partner)
        await scim_error(response, 404, None)
    listed = await scim_json(await client.get(SCIM + "/Users", headers=partner), 200)
    assert listed["totalResults"] == 0
    user = await client.app[STATE].users.get(uid)
    assert user is not None and user.active
    group = fixture("entra", "create_group")
    group["members"] = [{"value": uid}]
    await scim_error(
        await client.post(SCIM + "/Groups", json=group, headers=partner), 400, "invalidValue"
    )


@pytest.mark.parametrize(
    ("params", "scim_type"),
    [
        ({"filter": 'userName eq "unterminated'}, "invalidFilter"),
        ({"filter": 'userName xx "a"'}, "invalidFilter"),
        ({"filter": 'emails[type eq "work".value eq "x"'}, "invalidFilter"),
        ({"filter": 'nosuchattribute eq "x"'}, "invalidFilter"),
        ({"filter": "userName eq"}, "invalidFilter"),
        ({"count": "many"}, "invalidValue"),
    ],
)
async def test_bad_queries_are_refused(client, params, scim_type):
    headers = await bearer(client)
    await scim_error(
        await client.get(SCIM + "/Users", params=params, headers=headers), 400, scim_type
    )


async def test_conflicts_and_invalid_values(client):
    headers = await bearer(client)
    first = await create(client, headers)
    st = client.app[STATE]
    same_name = await client.post(
        SCIM + "/Users",
        json={**fixture("entra", "create_user"), "externalId": "other"},
        headers=headers,
    )
    body = await scim_error(same_name, 409, "uniqueness")
    assert body["detail"] == UNIQUE
    assert fixture("entra", "create_user")["userName"] not in str(body)
    same_email = await client.post(
        SCIM + "/Users",
        json={**fixture("entra", "create_user"), "externalId": "other2", "userName": "other2"},
        headers=headers,
    )
    await scim_error(same_email, 409, "uniqueness")
    assert len(await st.users.all_ids()) == 1, "a refused create leaves nothing behind"
    assert await st.users.by_username("corp", "other") is None

    bad_bool = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "active", "value": "maybe"}],
    }
    response = await client.patch(f"{SCIM}/Users/{first['id']}", json=bad_bool, headers=headers)
    await scim_error(response, 400, "invalidValue")
    bad_op = {**bad_bool, "Operations": [{"op": "Frobnicate", "path": "active", "value": False}]}
    response = await client.patch(f"{SCIM}/Users/{first['id']}", json=bad_op, headers=headers)
    await scim_error(response, 400, "invalidValue")
    read_only = {**bad_bool, "Operations": [{"op": "replace", "path": "id", "value": "mine"}]}
    response = await client.patch(f"{SCIM}/Users/{first['id']}", json=read_only, headers=headers)
    await scim_error(response, 400, "mutability")
    bad_email = {
        **fixture("entra", "create_user"),
        "userName": "x",
        "externalId": "x",
        "emails": [{"value": "not an address", "primary": True}],
    }
    await scim_error(
        await client.post(SCIM + "/Users", json=bad_email, headers=headers), 400, "invalidValue"
    )
    missing = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "externalId": "y"}
    await scim_error(
        await client.post(SCIM + "/Users", json=missing, headers=headers), 400, "invalidValue"
    )
    assert (await st.users.get(first["id"])).active


ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MARK = "<b>mark-7f3a</b>"


@pytest.mark.parametrize(
    ("manager", "detail"),
    [
        (42, f"a value does not fit its attribute: {ENTERPRISE}:manager"),
        ([MARK], f"a value does not fit its attribute: {ENTERPRISE}:manager"),
        ({"value": 42}, f"a value does not fit its attribute: {ENTERPRISE}:manager.value"),
        ("", f"{ENTERPRISE}:manager.$ref is required"),
        ({"$ref": MARK}, f"{ENTERPRISE}:manager.value is required"),
    ],
)
async def test_a_manager_that_is_no_id_is_refused_in_authgates_words(client, manager, detail):
    headers = await bearer(client)
    body = {**fixture("entra", "create_user"), ENTERPRISE: {"manager": manager}}
    refused = await scim_error(
        await client.post(SCIM + "/Users", json=body, headers=headers), 400, "invalidValue"
    )
    assert refused["detail"] == detail
    assert await client.app[STATE].users.all_ids() == set()


async def test_a_patched_manager_that_is_no_id_is_refused_in_authgates_words(client):
    headers = await bearer(client)
    uid = (await create(client, headers))["id"]
    for value in (42, [{"value": MARK}], True):
        operation = {"op": "add", "path": f"{ENTERPRISE}:manager", "value": value}
        response = await client.patch(
            f"{SCIM}/Users/{uid}",
            json={"schemas": [PATCH_OP], "Operations": [operation]},
            headers=headers,
        )
        refused = await scim_error(response, 400, "invalidValue")
        assert refused["detail"] == "a value does not fit its attribute: manager"
    assert ENTERPRISE not in (await client.app[STATE].users.get(uid)).attributes


async def test_no_error_body_repeats_the_request_or_a_library(client):
    headers = await bearer(client)
    uid = (await create(client, headers))["id"]

    async def patch_refused(operation, scim_type):
        response = await client.patch(
            f"{SCIM}/Users/{uid}",
            json={"schemas": [PATCH_OP], "Operations": [operation]},
            headers=headers,
        )
        return (await scim_error(response, 400, scim_type))["detail"]

    assert await patch_refused({"op": MARK, "path": "active", "value": False}, "invalidValue") == (
        "a value does not fit its attribute: Operations[0].op"
    )
    assert await patch_refused({"op": "replace", "path": MARK, "value": 1}, "invalidPath") == (
        "a PATCH path names no attribute of the resource: Operations[0].path"
    )
    assert await patch_refused(
        {"op": "replace", "path": "nickName", "value": {MARK: 1}}, "invalidValue"
    ) == ("a value does not fit its attribute: nickName")
    bad_filter = await client.get(SCIM + "/Users", params={"filter": f"{MARK} eq"}, headers=headers)
    assert (await scim_error(bad_filter, 400, "invalidFilter"))["detail"] == (
        "the filter is not a SCIM filter authgate can apply (RFC 7644 §3.4.2.2): filter"
    )
    bad_email = {
        **fixture("entra", "create_user"),
        "userName": "x",
        "externalId": "x",
        "emails": [{"value": MARK}],
    }
    created = await client.post(SCIM + "/Users", json=bad_email, headers=headers)
    assert (await scim_error(created, 400, "invalidValue"))["detail"] == (
        "a value does not fit its attribute: emails[0].value"
    )
    in_path = "mark<7f3a>"
    for path, detail in [
        (f"/Users/{in_path}", "no such user at this connection"),
        (f"/Groups/{in_path}", "no such group at this connection"),
        (f"/Schemas/{in_path}", "no such schema"),
        (f"/ResourceTypes/{in_path}", "no such resource type"),
    ]:
        missing = await client.get(SCIM + path, headers=headers)
        assert (await scim_error(missing, 404, None))["detail"] == detail
    group = {**fixture("entra", "create_group"), "members": [{"value": MARK}]}
    stranger = await client.post(SCIM + "/Groups", json=group, headers=headers)
    assert (await scim_error(stranger, 400, "invalidValue"))["detail"] == (
        "a member is not a user of this connection"
    )
    unknown = await client.get(f"{SCIM}/{MARK}", headers=headers)
    assert (await scim_error(unknown, 404, None))["detail"] == "no such SCIM endpoint"
    wrong_method = await client.put(SCIM + "/ServiceProviderConfig", headers=headers)
    assert (await scim_error(wrong_method, 405, None))["detail"] == (
        "this SCIM endpoint does not take this method"
    )


async def test_malformed_and_oversized_bodies(client):
    headers = await bearer(client)
    response = await client.post(SCIM + "/Users", data=b"{not json", headers=headers)
    await scim_error(response, 400, "invalidSyntax")
    huge = {**fixture("entra", "create_user"), "displayName": "x" * 5000}
    response = await client.post(SCIM + "/Users", data=json.dumps(huge), headers=headers)
    await scim_error(response, 413, None)
    assert await client.app[STATE].users.all_ids() == set()


async def test_unknown_endpoints_and_methods(client):
    headers = await bearer(client)
    await scim_error(await client.get(SCIM + "/Nope", headers=headers), 404, None)
    await scim_error(await client.post(SCIM + "/ServiceProviderConfig", headers=headers), 405, None)
    await scim_error(await client.get(SCIM + "/Users/does-not-exist", headers=headers), 404, None)
    await scim_error(await client.post(SCIM + "/.search", json={}, headers=headers), 501, None)


async def test_etags_guard_against_lost_updates(client):
    headers = await bearer(client)
    created = await client.post(
        SCIM + "/Users", json=fixture("entra", "create_user"), headers=headers
    )
    user = await scim_json(created, 201)
    url, tag = f"{SCIM}/Users/{user['id']}", created.headers["ETag"]
    assert tag.startswith('W/"')
    not_modified = await client.get(url, headers={**headers, "If-None-Match": tag})
    await scim_json(not_modified, 304)
    patch = fixture("entra", "update_user_single_valued")
    changed = await client.patch(url, json=patch, headers={**headers, "If-Match": tag})
    new_tag = changed.headers["ETag"]
    assert (await scim_json(changed, 200))["meta"]["version"] == new_tag != tag
    stale = await client.patch(url, json=patch, headers={**headers, "If-Match": tag})
    await scim_error(stale, 412, None)
    await scim_error(await client.delete(url, headers={**headers, "If-Match": tag}), 412, None)
    assert await client.app[STATE].users.get(user["id"]) is not None


async def test_password_is_never_stored_or_returned(client):
    headers = await bearer(client)
    body = {**fixture("okta", "create_user"), "password": "1mz050nq"}
    user = await scim_json(await client.post(SCIM + "/Users", json=body, headers=headers), 201)
    record = await client.app[STATE].users.get(user["id"])
    assert "password" not in user and "1mz050nq" not in record.to_json().decode()


async def test_removing_active_never_reactivates(client):
    headers = await bearer(client)
    uid = (await create(client, headers, active=False))["id"]
    remove = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": "active"}],
    }
    body = await scim_json(
        await client.patch(f"{SCIM}/Users/{uid}", json=remove, headers=headers), 200
    )
    assert body["active"] is False and not (await client.app[STATE].users.get(uid)).active


async def test_discovery_endpoints(client):
    headers = await bearer(client)
    config = await scim_json(
        await client.get(SCIM + "/ServiceProviderConfig", headers=headers), 200
    )
    assert config["patch"]["supported"] and config["etag"]["supported"]
    assert config["filter"] == {"supported": True, "maxResults": 100}
    assert config["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    types = await scim_json(await client.get(SCIM + "/ResourceTypes", headers=headers), 200)
    assert {t["id"] for t in types["Resources"]} == {"User", "Group"}
    schemas = await scim_json(await client.get(SCIM + "/Schemas", headers=headers), 200)
    assert "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User" in {
        s["id"] for s in schemas["Resources"]
    }
    response = await client.get(
        SCIM + "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", headers=headers
    )
    assert (await scim_json(response, 200))["name"] == "User"
    assert SCIM_JSON in response.headers["Content-Type"]


async def test_a_user_from_a_login_is_found_by_username_not_duplicated(client):
    st = client.app[STATE]
    headers = await bearer(client, "partner")
    jit = await st.users.create("partner", "sub-7", "carol@example.com")
    query = {"filter": 'userName eq "Carol@Example.com"'}
    found = await scim_json(await client.get(SCIM + "/Users", params=query, headers=headers), 200)
    assert [r["id"] for r in found["Resources"]] == [jit.id]
    duplicate = {**fixture("okta", "create_user"), "userName": "carol@example.com"}
    response = await client.post(SCIM + "/Users", json=duplicate, headers=headers)
    await scim_error(response, 409, "uniqueness")
