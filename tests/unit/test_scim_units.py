"""SCIM building blocks: tokens, Entra's filter and PATCH quirks, the user-store mapping."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from scim2_models import (
    Context,
    Group,
    GroupMember,
    InvalidFilterException,
    InvalidValueException,
    MutabilityException,
)

from authgate import users as store
from authgate.errors import PolicyDenied
from authgate.scim import patch
from authgate.scim.filters import equality, normalise_filter, search_request
from authgate.scim.resources import UserResource, user_fields, user_resource
from authgate.scim.tokens import ScimTokens
from authgate.scim.validation import validated
from authgate.session.memory import MemoryStore

OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BASE = "https://app.example.com/_authgate/scim/v2"


async def test_tokens_are_shown_once_and_stored_as_a_digest():
    kv = MemoryStore()
    tokens = ScimTokens(kv)
    info, secret = await tokens.create("corp", "Entra ID")
    assert secret.startswith("agscim_") and len(secret) > 40
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert await kv.get("scim-token:" + digest) is not None
    assert all(secret not in str(v) for v in kv._data.values())
    assert (await tokens.verify(secret)).connection == "corp"
    for forged in ("", secret[:-1], secret + "x", digest, "agscim_" + "A" * 300):
        assert await tokens.verify(forged) is None
    assert await tokens.revoke(info.id)
    assert await tokens.verify(secret) is None and await tokens.list() == []


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("externalId eq 5171a35d82074e068ce2", 'externalId eq "5171a35d82074e068ce2"'),
        ("externalId eq 0a21f0f2-8d2a-4f8e", 'externalId eq "0a21f0f2-8d2a-4f8e"'),
        ('userName eq "a b"', 'userName eq "a b"'),
        ("active eq true", "active eq true"),
        ("meta.version eq 12", "meta.version eq 12"),
        ("userName eq x or 1 eq 1", "userName eq x or 1 eq 1"),
    ],
)
def test_only_entras_bare_equality_is_quoted(raw, normalised):
    assert normalise_filter(raw) == normalised


def test_search_request_caps_count_and_spots_index_lookups():
    request = search_request(
        UserResource, {"filter": 'USERNAME eq "Bob"', "count": "5000", "startIndex": "-3"}, 100
    )
    assert request.count == 100 and request.start_index == 1
    assert equality(request) == ("username", "Bob")
    other = search_request(UserResource, {"filter": 'userName eq "a" and active eq true'}, 100)
    assert equality(other) is None
    assert equality(search_request(UserResource, {}, 100)) is None
    with pytest.raises(InvalidFilterException) as refused:
        search_request(UserResource, {"filter": "userName eq"}, 100)
    assert refused.value.to_error().detail == (
        "the filter is not a SCIM filter authgate can apply (RFC 7644 §3.4.2.2): filter"
    )


def user(**attrs) -> UserResource:
    base = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "bjensen",
        "externalId": "ext-1",
        "active": True,
    }
    return UserResource.model_validate({**base, **attrs})


def test_entra_patch_forms_apply():
    resource = user(emails=[{"value": "old@example.com", "type": "work", "primary": True}])
    resource.id = "u1"
    body = {
        "schemas": [OP],
        "Operations": [
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Add", "value": {"name.givenName": "Barbara", "displayName": "Babs"}},
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "new@example.com"},
            {
                "op": "Add",
                "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                "value": "Sales",
            },
        ],
    }
    assert patch.apply(UserResource, resource, body, BASE)
    fields = user_fields(resource, "externalId")
    assert fields["active"] is False and fields["email"] == "new@example.com"
    assert fields["display_name"] == "Babs" and fields["external_id"] == "ext-1"
    assert fields["attributes"]["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] == {
        "department": "Sales"
    }


def test_member_removal_forms_and_okta_rename():
    group = Group(
        id="g1",
        display_name="Eng",
        members=[GroupMember(value=v, ref=f"https://x/Users/{v}") for v in ("a", "b", "c")],
    )
    legacy = {
        "schemas": [OP],
        "Operations": [
            {"name": "removeMember", "op": "Remove", "path": "members",
             "value": [{"$ref": None, "value": "a"}]},
        ],
    }  # fmt: skip
    assert patch.apply(Group, group, legacy, BASE)
    flagged = {"schemas": [OP], "Operations": [{"op": "remove", "path": 'members[value eq "b"]'}]}
    assert patch.apply(Group, group, flagged, BASE)
    assert [m.value for m in group.members] == ["c"]
    rename = {
        "schemas": [OP],
        "Operations": [{"op": "replace", "value": {"id": "g1", "displayName": "R&D"}}],
    }
    assert patch.apply(Group, group, rename, BASE) and group.display_name == "R&D"
    spoof = {"schemas": [OP], "Operations": [{"op": "replace", "value": {"id": "other"}}]}
    with pytest.raises(MutabilityException):
        patch.apply(Group, group, spoof, BASE)


def test_invalid_patch_values_are_refused():
    resource = user()
    resource.id = "u1"
    bad = {"schemas": [OP], "Operations": [{"op": "replace", "path": "active", "value": "maybe"}]}
    with pytest.raises(InvalidValueException):
        patch.apply(UserResource, resource, bad, BASE)


ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "add", "path": f"{ENTERPRISE}:manager", "value": "m-1"},
        {"op": "Replace", "path": f"{ENTERPRISE}:manager", "value": {"value": "m-1"}},
        {"op": "replace", "path": f"{ENTERPRISE}:manager.value", "value": "m-1"},
        {"op": "replace", "value": {f"{ENTERPRISE}:manager": "m-1"}},
        {"op": "replace", "value": {ENTERPRISE: {"manager": "m-1"}}},
        {"op": "add", "path": ENTERPRISE, "value": {"manager": {"value": "m-1"}}},
    ],
)
def test_entra_manager_forms_become_the_rfc_complex_value(operation):
    resource = user(**{ENTERPRISE: {"manager": {"value": "m-0", "$ref": f"{BASE}/Users/m-0"}}})
    resource.id = "u1"
    assert patch.apply(UserResource, resource, {"schemas": [OP], "Operations": [operation]}, BASE)
    stored = user_fields(resource, "externalId")["attributes"][ENTERPRISE]
    assert stored == {"manager": {"value": "m-1", "$ref": f"{BASE}/Users/m-1"}}


@pytest.mark.parametrize("value", [None, "m-0", [{"value": "m-0"}]])
def test_removing_the_manager_takes_it_away(value):
    resource = user(**{ENTERPRISE: {"manager": {"value": "m-0", "$ref": f"{BASE}/Users/m-0"}}})
    resource.id = "u1"
    operation = {"op": "Remove", "path": f"{ENTERPRISE}:manager"}
    if value is not None:
        operation["value"] = value
    assert patch.apply(UserResource, resource, {"schemas": [OP], "Operations": [operation]}, BASE)
    assert ENTERPRISE not in user_fields(resource, "externalId")["attributes"]


def test_a_manager_id_is_escaped_in_its_ref():
    body = patch.user_body({ENTERPRISE: {"manager": "a/b c?d"}, "userName": "x"}, BASE)
    assert body[ENTERPRISE]["manager"] == {
        "value": "a/b c?d",
        "$ref": f"{BASE}/Users/a%2Fb%20c%3Fd",
    }
    assert patch.user_body({ENTERPRISE: {"manager": 7}}, BASE) == {ENTERPRISE: {"manager": 7}}


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (7, f"a value does not fit its attribute: {ENTERPRISE}:manager"),
        (["m-1"], f"a value does not fit its attribute: {ENTERPRISE}:manager"),
        ({"value": 7}, f"a value does not fit its attribute: {ENTERPRISE}:manager.value"),
        ("", f"{ENTERPRISE}:manager.$ref is required"),
        ({"$ref": f"{BASE}/Users/m"}, f"{ENTERPRISE}:manager.value is required"),
    ],
)
def test_a_manager_that_is_no_id_is_refused_in_authgates_words(value, detail):
    body = patch.user_body({**user().model_dump(), ENTERPRISE: {"manager": value}}, BASE)
    with pytest.raises(InvalidValueException) as refused, validated():
        UserResource.model_validate(body, scim_ctx=Context.RESOURCE_CREATION_REQUEST)
    assert refused.value.to_error().model_dump() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "400",
        "scimType": "invalidValue",
        "detail": detail,
    }


def test_a_patch_refusal_names_the_attribute_not_pydantic():
    resource = user()
    resource.id = "u1"
    operation = {"op": "add", "path": f"{ENTERPRISE}:manager", "value": 7}
    with pytest.raises(InvalidValueException) as refused:
        patch.apply(UserResource, resource, {"schemas": [OP], "Operations": [operation]}, BASE)
    assert str(refused.value) == "a value does not fit its attribute: manager"


def test_stored_user_keeps_no_password_and_link_follows_the_setting():
    resource = UserResource.model_validate(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "test.user@example.com",
            "password": "1mz050nq",
            "emails": [{"value": "home@example.com", "type": "home"}],
        }
    )
    fields = user_fields(resource, "externalId")
    assert "password" not in fields["attributes"]
    assert fields["external_id"] == "test.user@example.com", "no externalId: userName links"
    assert fields["email"] == "home@example.com"
    assert user_fields(resource, "userName")["external_id"] == "test.user@example.com"


def test_a_login_user_gets_a_scim_view():
    record = store.User(
        id="u9", connection="corp", external_id="sub-9", email="a@example.com", display_name="A"
    )
    view = user_resource(record, [], "https://app.example.com/_authgate/scim/v2")
    assert view.user_name == "a@example.com" and view.external_id == "sub-9"
    assert view.active is True and view.meta.version.startswith('W/"')


async def test_user_store_update_moves_unique_keys_or_changes_nothing():
    users = store.UserStore(MemoryStore())
    alice = await users.create("corp", "s1", "alice@example.com", username="alice")
    await users.create("corp", "s2", "bob@example.com", username="bob")
    moved = await users.update(alice, replace(alice, external_id="s1b", username="Alice2"))
    assert (await users.by_link("corp", "s1b")).id == alice.id
    assert await users.by_link("corp", "s1") is None
    assert (await users.by_username("corp", "alice2")).id == alice.id
    with pytest.raises(PolicyDenied):
        await users.update(moved, replace(moved, email="new@example.com", username="BOB"))
    assert await users.by_email("new@example.com") is None, "the email claim was rolled back"
    assert (await users.get(alice.id)).email == "alice@example.com"
    group = await users.create_group("corp", "Eng")
    await users.add_members(group.id, {alice.id})
    await users.delete(moved)
    assert await users.members(group.id) == set() and await users.get(alice.id) is None
    assert await users.by_email("alice@example.com") is None


def test_directory_sync_must_name_configured_connections():
    from authgate.settings import ConfigError
    from tests.conftest import make_settings

    sync = {
        "tenant_id": "t",
        "client_id": "c",
        "client_secret": "s",
        "group_id": "g",
        "connections": ["nope"],
        "select": ["mail", "bad-name"],
    }
    with pytest.raises(ConfigError) as refused:
        make_settings("http://127.0.0.1:9", directory_sync=sync)
    assert refused.value.problems == [
        "test.yaml: directory_sync.select: 'bad-name' is not a Graph user property name"
        " such as mail"
    ]
    sync["select"] = ["mail"]
    with pytest.raises(ConfigError) as refused:
        make_settings("http://127.0.0.1:9", directory_sync=sync)
    assert "directory_sync.connections: no connection has id 'nope'" in refused.value.problems[0]
