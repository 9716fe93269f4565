"""Okta's SCIM client, replayed with the bodies of Okta's SCIM 2.0 protocol reference."""

from __future__ import annotations

import pytest

from authgate.app import create_app
from authgate.web.state import STATE
from tests.conftest import redis_kv
from tests.scim_support import SCIM, bearer, events, fixture, provisioning_settings, scim_json

pytestmark = pytest.mark.integration
OKTA_USER_ID = "23a35c27-23d3-4c03-b4c5-6443c09e7173"
OKTA_OTHER_ID = "89bb1940-b905-4575-9e7f-6f887cfb368e"
OKTA_GROUP_ID = "abf4dd94-a4c0-4f67-89c9-76b03340cb9b"


async def test_okta_user_and_group_push(aiohttp_client, redis_url, tmp_path):
    audit = tmp_path / "audit.jsonl"
    settings = provisioning_settings(audit, redis_url, scim={"link_attribute": "userName"})
    client = await aiohttp_client(create_app(settings, redis_kv(redis_url)))
    st, headers = client.app[STATE], await bearer(client)
    query = {"filter": fixture("okta", "find_user"), "startIndex": "1", "count": "100"}

    empty = await scim_json(await client.get(SCIM + "/Users", params=query, headers=headers), 200)
    assert empty["totalResults"] == 0 and empty["startIndex"] == 1 and empty["Resources"] == []
    created = await client.post(
        SCIM + "/Users", json=fixture("okta", "create_user"), headers=headers
    )
    user = await scim_json(created, 201)
    uid = user["id"]
    assert user["displayName"] == "Test User" and user["externalId"] == "00ujl29u0le5T6Aj10h7"
    record = await st.users.by_link("corp", "test.user@example.com")
    assert record.id == uid, "linked on userName as configured (Okta's SAML NameID)"

    found = await scim_json(await client.get(SCIM + "/Users", params=query, headers=headers), 200)
    assert found["totalResults"] == 1 and found["itemsPerPage"] == 1

    put = fixture("okta", "update_user_put", **{OKTA_USER_ID: uid})
    replaced = await scim_json(
        await client.put(f"{SCIM}/Users/{uid}", json=put, headers=headers), 200
    )
    assert replaced["name"] == {
        "givenName": "Another",
        "middleName": "Excited",
        "familyName": "User",
    }
    assert "locale" not in replaced, "PUT replaces the whole resource"

    deactivated = await client.patch(
        f"{SCIM}/Users/{uid}", json=fixture("okta", "deactivate_user"), headers=headers
    )
    assert (await scim_json(deactivated, 200))["active"] is False
    assert not (await st.users.get(uid)).active
    assert events(audit, "session.revoked")[-1]["reason"] == "scim_deactivated"

    other = await scim_json(
        await client.post(
            SCIM + "/Users",
            json={
                **fixture("okta", "create_user"),
                "userName": "other@example.com",
                "emails": [{"value": "other@example.com", "primary": True}],
            },
            headers=headers,
        ),
        201,
    )
    ids = {OKTA_USER_ID: uid, OKTA_OTHER_ID: other["id"]}
    group = await scim_json(
        await client.post(SCIM + "/Groups", json=fixture("okta", "create_group"), headers=headers),
        201,
    )
    gid = group["id"]
    ids[OKTA_GROUP_ID] = gid
    rename = await client.patch(
        f"{SCIM}/Groups/{gid}", json=fixture("okta", "rename_group", **ids), headers=headers
    )
    await scim_json(rename, 204)
    replace_all = fixture("okta", "replace_group_members", **ids)
    await scim_json(
        await client.patch(f"{SCIM}/Groups/{gid}", json=replace_all, headers=headers), 204
    )
    assert await st.users.members(gid) == {uid, other["id"]}
    membership = fixture("okta", "update_group_membership", **ids)
    await scim_json(
        await client.patch(f"{SCIM}/Groups/{gid}", json=membership, headers=headers), 204
    )
    assert await st.users.members(gid) == {uid}
    shown = await scim_json(await client.get(f"{SCIM}/Groups/{gid}", headers=headers), 200)
    assert shown["members"][0]["display"] == "test.user@example.com"
    put_group = fixture("okta", "update_group_put", **ids)
    await scim_json(await client.put(f"{SCIM}/Groups/{gid}", json=put_group, headers=headers), 200)
    assert await st.users.members(gid) == {uid}

    page = await scim_json(
        await client.get(
            SCIM + "/Users", params={"startIndex": "2", "count": "1"}, headers=headers
        ),
        200,
    )
    assert page["totalResults"] == 2 and page["startIndex"] == 2 and page["itemsPerPage"] == 1
    assert page["Resources"][0]["id"] == other["id"], "stable order: creation time"
    await scim_json(await client.delete(f"{SCIM}/Groups/{gid}", headers=headers), 204)
    assert await st.users.get_group(gid) is None
