"""One admission step: a sign-in, a test sign-in and a refresh reach the same verdict.

Each case builds the person and the store state that should refuse (or
admit) them and asks all three callers; the preview must also leave the
store exactly as it found it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from authgate.admission import Admission
from authgate.connections import Connection, Connections
from authgate.identity import Identity
from authgate.session.memory import MemoryStore
from authgate.settings import parse_settings
from authgate.users import UserStore
from tests.servers import free_port


def _connection(conn_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": conn_id,
        "name": conn_id,
        "type": "oidc",
        "issuer": f"http://127.0.0.1:{free_port()}",
        "client_id": "authgate",
        "client_secret": "s3cret",
        **extra,
    }


SETTINGS = parse_settings(
    {
        "public_url": "https://app.example.com",
        "upstream": {"url": "http://127.0.0.1:9"},
        "session": {"store": "memory"},
        "access": {
            "allowed_domains": ["example.com"],
            "role_mappings": [{"group": "ops", "roles": ["operator"]}],
        },
        "connections": [
            _connection("jit"),
            _connection("pre", provisioning="preprovisioned"),
            _connection("dir"),
        ],
        "directory_sync": {
            "tenant_id": "t",
            "client_id": "c",
            "client_secret": "s",
            "group_id": "g",
            "connections": ["dir"],
        },
    },
    "test.yaml",
)


def conn(conn_id: str) -> Connection:
    settings = next(c for c in SETTINGS.connections if c.id == conn_id)
    return Connections(SETTINGS.access).describe(settings, "file", 0, True)


def person(conn_id: str = "jit", **extra: Any) -> Identity:
    fields: dict[str, Any] = {
        "connection": conn_id,
        "subject": "alice-sub",
        "email": "alice@example.com",
        "email_verified": True,
        "groups": ("ops",),
    }
    return Identity(**{**fields, **extra})


@pytest.fixture
def kv() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def admission(kv: MemoryStore) -> Admission:
    return Admission(UserStore(kv), kv, SETTINGS.directory_sync)


async def verdicts(admission: Admission, kv: MemoryStore, c: str, who: Identity) -> list[Any]:
    """The reason (or None) from preview, then sign-in, then a renew of the signed-in user."""
    before = copy.deepcopy(kv._data)
    previewed = await admission.preview(conn(c), who)
    assert kv._data == before, "the preview wrote to the store"
    signed = await admission.sign_in(conn(c), who)
    out = [getattr(v.refusal, "reason", None) for v in (previewed, signed)]
    if signed.user is not None:
        renewed = await admission.renew(conn(c), who, signed.user.id)
        out.append(getattr(renewed.refusal, "reason", None))
    return out


@pytest.mark.parametrize(
    ("case", "connection", "extra", "expected"),
    [
        ("admitted", "jit", {}, [None, None, None]),
        ("no email", "jit", {"email": None}, ["email_unverified"] * 2),
        ("unverified", "jit", {"email_verified": False}, ["email_unverified"] * 2),
        ("foreign domain", "jit", {"email": "eve@evil.example"}, ["domain_not_allowed"] * 2),
        ("not provisioned", "pre", {}, ["user_not_provisioned"] * 2),
        ("not a member", "dir", {}, ["not_a_member"] * 2),
        ("session limit passed", "jit", {"session_not_after": 1.0}, ["expired"] * 2),
    ],
)
async def test_every_caller_reaches_the_same_verdict(
    admission, kv, case, connection, extra, expected
):
    assert await verdicts(admission, kv, connection, person(connection, **extra)) == expected


async def test_a_deactivated_user_is_refused_everywhere(admission, kv):
    users = UserStore(kv)
    user = await users.create("jit", "alice-sub", "alice@example.com")
    await users.set_active(user, False)
    assert await verdicts(admission, kv, "jit", person()) == ["user_disabled"] * 2
    renewed = await admission.renew(conn("jit"), person(), user.id)
    assert renewed.refusal is not None and renewed.refusal.reason == "user_disabled"


async def test_an_email_taken_by_another_user_is_refused_before_sign_in(admission, kv):
    users = UserStore(kv)
    await users.create("jit", "alice-sub", "alice@example.com")
    await users.create("jit", "bob-sub", "bob@example.com")
    moved = person(email="bob@example.com")
    assert await verdicts(admission, kv, "jit", moved) == ["email_conflict"] * 2


async def test_a_deleted_user_loses_the_session_at_refresh(admission):
    renewed = await admission.renew(conn("jit"), person(), "no-such-user")
    assert renewed.refusal is not None and renewed.refusal.reason == "user_disabled"


async def test_provisioned_groups_count_at_sign_in_and_at_refresh(admission, kv):
    """Before this step a refresh mapped the IdP's groups only, so a role that came from a
    SCIM group was lost at the first refresh."""
    users = UserStore(kv)
    user = await users.create("jit", "alice-sub", "alice@example.com", source="scim")
    group = await users.create_group("jit", "ops", "ops-external")
    await users.add_members(group.id, {user.id})
    who = person(groups=())
    signed = await admission.sign_in(conn("jit"), who)
    renewed = await admission.renew(conn("jit"), who, user.id)
    assert signed.roles == renewed.roles == ("operator",)
    assert signed.groups == renewed.groups == ("ops",)


async def test_a_preview_of_a_new_user_maps_the_idp_groups(admission):
    previewed = await admission.preview(conn("jit"), person())
    assert previewed.user is None and previewed.refusal is None
    assert previewed.roles == ("operator",)
