"""Entra ID's provisioning service, replayed request by request against authgate on Redis.

The bodies are the ones Microsoft documents (tests/fixtures/scim/entra.json);
after each step the store, the sessions and the audit log are checked, and
deactivation is proven to end a session held on another replica.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from authgate.app import create_app
from authgate.errors import PolicyDenied
from authgate.identity import Identity
from authgate.web.state import STATE
from tests.conftest import cookie_header, redis_kv
from tests.scim_support import (
    SCIM,
    bearer,
    events,
    fixture,
    login,
    provisioning_settings,
    scim_error,
    scim_json,
    session_id,
)

pytestmark = pytest.mark.integration

USER_NAME = "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
EXTERNAL_ID = "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
async def replicas(aiohttp_client, redis_url, audit):
    """Two authgate processes sharing one Redis, as two pods of a deployment."""
    settings = provisioning_settings(audit, redis_url)
    first = await aiohttp_client(create_app(settings, redis_kv(redis_url)))
    second = await aiohttp_client(create_app(settings, redis_kv(redis_url)))
    return first, second


def ident(subject: str, email: str) -> Identity:
    return Identity(
        connection="corp", subject=subject, email=email, email_verified=True, name="Test User"
    )


async def test_test_connection_and_zero_results_answer_an_empty_list(replicas):
    client, _ = replicas
    headers = await bearer(client)
    for query in (
        {"filter": f'userName eq "{uuid.uuid4()}"'},
        {"aadOptscim062020": "", "filter": f"externalId eq {uuid.uuid4().hex}"},
        {"filter": fixture("entra", "get_user_by_query_zero_results")},
    ):
        body = await scim_json(
            await client.get(SCIM + "/Users", params=query, headers=headers), 200
        )
        assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]
        assert body["totalResults"] == 0 and body["Resources"] == []


async def test_user_lifecycle_as_entra_sends_it(replicas, audit):
    client, replica = replicas
    st, headers = client.app[STATE], await bearer(client)

    created = await client.post(
        SCIM + "/Users", json=fixture("entra", "create_user"), headers=headers
    )
    user = await scim_json(created, 201)
    uid = user["id"]
    assert created.headers["Location"] == f"https://app.example.com{SCIM}/Users/{uid}"
    assert created.headers["ETag"] == user["meta"]["version"]
    assert user["userName"] == USER_NAME and user["externalId"] == EXTERNAL_ID
    assert user["active"] is True and user["meta"]["resourceType"] == "User"
    record = await st.users.by_link("corp", EXTERNAL_ID)
    assert record is not None and record.id == uid and record.source == "scim"
    assert record.email == "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com"
    assert not record.linked

    query = {"filter": fixture("entra", "get_user_by_query").lower()}
    found = await scim_json(await client.get(SCIM + "/Users", params=query, headers=headers), 200)
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == uid

    patched = await client.patch(
        f"{SCIM}/Users/{uid}", json=fixture("entra", "update_user_multi_valued"), headers=headers
    )
    body = await scim_json(patched, 200)
    assert body["emails"][0]["value"] == "updatedEmail@microsoft.com"
    assert body["name"]["familyName"] == "updatedFamilyName"
    assert (await st.users.by_email("updatedemail@microsoft.com")).id == uid
    assert await st.users.by_email(record.email) is None, "the old email is released"

    await scim_json(
        await client.patch(
            f"{SCIM}/Users/{uid}",
            json=fixture("entra", "replace_multiple_attributes_without_flag"),
            headers=headers,
        ),
        200,
    )
    assert (await st.users.by_link("corp", "Eqpj")).id == uid, "the link follows externalId"
    assert await st.users.by_link("corp", EXTERNAL_ID) is None
    flagged = await scim_json(
        await client.patch(
            f"{SCIM}/Users/{uid}",
            json=fixture("entra", "replace_multiple_attributes_with_flag"),
            headers=headers,
        ),
        200,
    )
    assert flagged["displayName"] == "Bjfe" and flagged["name"]["givenName"] == "Kkom"
    enterprise = flagged["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
    assert enterprise["employeeNumber"] == "Aklq"
    nick = await client.patch(
        f"{SCIM}/Users/{uid}",
        json=fixture("entra", "add_single_value_without_flag"),
        headers=headers,
    )
    assert (await scim_json(nick, 200))["nickName"] == "Babs"

    # The provisioned user signs in (pre-provisioned mode) and is linked on ExternalId.
    response = await login(replica.app[STATE], ident("Eqpj", "TestMhvaes@test.microsoft.com"))
    sid = session_id(replica.app[STATE], response)
    assert (await st.users.get(uid)).linked
    auth = await replica.get("/_authgate/auth", headers=cookie_header(replica, sid))
    assert auth.status == 200

    disabled = await client.patch(
        f"{SCIM}/Users/{uid}", json=fixture("entra", "disable_user_without_flag"), headers=headers
    )
    assert (await scim_json(disabled, 200))["active"] is False
    auth = await replica.get("/_authgate/auth", headers=cookie_header(replica, sid))
    assert auth.status == 401, "the other replica refuses the session at once"
    assert await st.sessions.count_for_user(uid) == 0
    revoked = events(audit, "session.revoked")
    assert revoked[-1]["user_id"] == uid and revoked[-1]["reason"] == "scim_deactivated"
    assert revoked[-1]["sessions"] == 1
    assert events(audit, "scim.user.deactivated")[-1]["user_id"] == uid

    still_there = await client.get(f"{SCIM}/Users/{uid}", headers=headers)
    assert (await scim_json(still_there, 200))["active"] is False, "soft delete keeps the user"
    with pytest.raises(PolicyDenied) as refused:
        await login(st, ident("Eqpj", "TestMhvaes@test.microsoft.com"))
    assert refused.value.reason == "user_disabled"

    gone = await client.delete(f"{SCIM}/Users/{uid}", headers=headers)
    await scim_json(gone, 204)
    assert await st.users.get(uid) is None and await st.users.by_link("corp", "Eqpj") is None
    await scim_error(await client.get(f"{SCIM}/Users/{uid}", headers=headers), 404, None)
    assert events(audit, "scim.user.deleted")[-1]["user_id"] == uid
    kinds = [e["event"] for e in events(audit)]
    assert kinds.count("user.provisioned") == 1 and "scim.user.created" in kinds


@pytest.mark.parametrize("form", ["disable_user_without_flag", "disable_user_with_flag"])
async def test_both_deactivation_forms_revoke_every_session(replicas, form):
    client, replica = replicas
    headers = await bearer(client)
    uid = (
        await scim_json(
            await client.post(
                SCIM + "/Users", json=fixture("entra", "create_user"), headers=headers
            ),
            201,
        )
    )["id"]
    who = ident(EXTERNAL_ID, "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com")
    sids = [session_id(app.app[STATE], await login(app.app[STATE], who)) for app in replicas]
    patched = await client.patch(
        f"{SCIM}/Users/{uid}", json=fixture("entra", form), headers=headers
    )
    assert (await scim_json(patched, 200))["active"] is False
    for app, sid in zip(replicas, sids, strict=True):
        assert (await app.get("/_authgate/auth", headers=cookie_header(app, sid))).status == 401
    assert await replica.app[STATE].sessions.count_for_user(uid) == 0


async def test_group_lifecycle_and_membership_feed_roles(replicas, audit):
    client, replica = replicas
    st, headers = client.app[STATE], await bearer(client)
    uid = (
        await scim_json(
            await client.post(
                SCIM + "/Users", json=fixture("entra", "create_user"), headers=headers
            ),
            201,
        )
    )["id"]
    group = await scim_json(
        await client.post(SCIM + "/Groups", json=fixture("entra", "create_group"), headers=headers),
        201,
    )
    gid = group["id"]
    assert group["displayName"] == "displayName" and "members" not in group

    query = {
        "excludedAttributes": "members",
        "filter": fixture("entra", "get_group_by_display_name"),
    }
    listed = await scim_json(await client.get(SCIM + "/Groups", params=query, headers=headers), 200)
    assert listed["totalResults"] == 1 and listed["Resources"][0]["id"] == gid

    add = fixture("entra", "update_group_add_members", f648f8d5ea4e4cd38e9c=uid)
    await scim_json(await client.patch(f"{SCIM}/Groups/{gid}", json=add, headers=headers), 204)
    assert await st.users.members(gid) == {uid}
    full = await scim_json(await client.get(f"{SCIM}/Groups/{gid}", headers=headers), 200)
    assert [m["value"] for m in full["members"]] == [uid]
    slim = await client.get(
        f"{SCIM}/Groups/{gid}", params={"excludedAttributes": "members"}, headers=headers
    )
    assert "members" not in await scim_json(slim, 200)
    user = await scim_json(await client.get(f"{SCIM}/Users/{uid}", headers=headers), 200)
    assert [g["value"] for g in user["groups"]] == [gid]

    rename = fixture("entra", "update_group_non_member_attributes")
    rename["Operations"][0]["value"] = "Admins"
    await scim_json(await client.patch(f"{SCIM}/Groups/{gid}", json=rename, headers=headers), 204)
    assert (await st.users.get_group(gid)).display_name == "Admins"

    who = ident(EXTERNAL_ID, "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com")
    sid = session_id(replica.app[STATE], await login(replica.app[STATE], who))
    session = await replica.app[STATE].sessions.load(sid)
    assert session.roles == ("admin",) and "Admins" in session.groups

    remove = fixture("entra", "update_group_remove_members", f648f8d5ea4e4cd38e9c=uid)
    await scim_json(await client.patch(f"{SCIM}/Groups/{gid}", json=remove, headers=headers), 204)
    assert await st.users.members(gid) == set()
    assert await replica.app[STATE].sessions.load(sid) is None, "roles from the group end with it"
    assert events(audit, "session.revoked")[-1]["reason"] == "scim_group_membership_removed"
    again = await login(replica.app[STATE], who)
    fresh = await replica.app[STATE].sessions.load(session_id(replica.app[STATE], again))
    assert fresh.roles == ("viewer",)

    await scim_json(await client.patch(f"{SCIM}/Groups/{gid}", json=add, headers=headers), 204)
    flagged = fixture(
        "entra", "remove_group_member_with_flag", **{"7f4bc1a3-285e-48ae-8202-5accb43efb0e": uid}
    )
    await scim_json(await client.patch(f"{SCIM}/Groups/{gid}", json=flagged, headers=headers), 204)
    assert await st.users.members(gid) == set()

    await scim_json(await client.delete(f"{SCIM}/Groups/{gid}", headers=headers), 204)
    assert await st.users.get_group(gid) is None
    assert await st.users.groups_of(uid) == []
    kinds = {e["event"] for e in events(audit, "scim.group.")}
    assert kinds == {
        "scim.group.created",
        "scim.group.updated",
        "scim.group.members_changed",
        "scim.group.deleted",
    }


def entra_user(name: str, **extra: object) -> dict:
    """Entra's documented create body for another person."""
    emails = [{"primary": True, "type": "work", "value": f"{name}@testuser.com"}]
    body = {**fixture("entra", "create_user"), "userName": name, "externalId": name}
    return {**body, "emails": emails, **extra}


async def test_the_manager_in_each_form_entra_sends(replicas):
    """`"manager": "<id>"`, `{"value": "<id>"}`, and PATCH on the manager's URN path.

    The PATCH body is the one Entra sends when a user's manager is set, as
    reported to SCIM-SDK (Captain-P-Goldfish/SCIM-SDK#686): the id alone.
    """
    client, _ = replicas
    st, headers = client.app[STATE], await bearer(client)
    boss = await scim_json(
        await client.post(SCIM + "/Users", json=entra_user("boss"), headers=headers), 201
    )
    expected = {"value": boss["id"], "$ref": f"https://app.example.com{SCIM}/Users/{boss['id']}"}

    for n, manager in enumerate([boss["id"], {"value": boss["id"]}]):
        body = entra_user(
            f"report-{n}", **{ENTERPRISE: {"department": "Sales", "manager": manager}}
        )
        created = await scim_json(
            await client.post(SCIM + "/Users", json=body, headers=headers), 201
        )
        assert created[ENTERPRISE] == {"department": "Sales", "manager": expected}
        record = await st.users.get(created["id"])
        assert record.attributes[ENTERPRISE]["manager"]["value"] == boss["id"]

    uid = (
        await scim_json(
            await client.post(SCIM + "/Users", json=entra_user("carol"), headers=headers), 201
        )
    )["id"]
    for op, value in [("add", boss["id"]), ("Replace", {"value": boss["id"]}), ("Add", boss["id"])]:
        operation = {"op": op, "path": f"{ENTERPRISE}:manager", "value": value}
        patched = await client.patch(
            f"{SCIM}/Users/{uid}",
            json={"schemas": [PATCH_OP], "Operations": [operation]},
            headers=headers,
        )
        assert (await scim_json(patched, 200))[ENTERPRISE] == {"manager": expected}
        read = await scim_json(await client.get(f"{SCIM}/Users/{uid}", headers=headers), 200)
        assert read[ENTERPRISE] == {"manager": expected}
        assert (await st.users.get(uid)).attributes[ENTERPRISE] == {"manager": expected}
        removal = {"op": "Remove", "path": f"{ENTERPRISE}:manager"}
        removed = await client.patch(
            f"{SCIM}/Users/{uid}",
            json={"schemas": [PATCH_OP], "Operations": [removal]},
            headers=headers,
        )
        assert ENTERPRISE not in await scim_json(removed, 200)

    replaced = await client.put(
        f"{SCIM}/Users/{uid}",
        json=entra_user("carol", **{ENTERPRISE: {"manager": boss["id"]}}),
        headers=headers,
    )
    assert (await scim_json(replaced, 200))[ENTERPRISE] == {"manager": expected}
