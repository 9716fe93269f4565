"""`PATCH {prefix}/admin/api/users/{id}`: roles and active, in force on the next request everywhere.

Two apps on one real Redis stand for two replicas; the user's session is read
(and cached) by the other one, which must serve the new roles on the very next
request. Every bad body is refused with a sentence naming the field, never
the parser's or pydantic's wording, and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from authgate.app import create_app
from authgate.identity import Identity
from authgate.settings import Settings
from authgate.web.state import STATE
from tests.conftest import redis_kv, sign_in

TOKEN = "5e8a2c7f1b4d9e3a6c0f8b2d5a9e1c4f7b3d6a0e8c2f5b9d1a4e7c0f3b6d9a2e"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
ALICE = Identity(
    connection="corp", subject="sub-alice", email="alice@example.com", email_verified=True,
    name="Alice", groups=("Engineering",),
)  # fmt: skip
LIBRARY_WORDS = ("validation error", "Input should", "pydantic", "Expecting", "type=")


@pytest.fixture
async def pair(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings], redis_url: str
) -> tuple[TestClient, TestClient]:
    settings = settings_factory(
        admin={"token": TOKEN}, session={"store": "redis", "redis": {"url": redis_url}}
    )
    first = await aiohttp_client(create_app(settings, redis_kv(redis_url)))
    second = await aiohttp_client(create_app(settings, redis_kv(redis_url)))
    return first, second


async def roles_seen(client: TestClient) -> list[str]:
    resp = await client.get("/_authgate/userinfo")
    assert resp.status == 200
    return (await resp.json())["roles"]


async def patch(client: TestClient, user_id: str, body: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.patch(
        f"/_authgate/admin/api/users/{user_id}",
        data=data,
        headers={**AUTH, "Content-Type": "application/json"},
    )


async def test_new_roles_are_on_the_next_request_of_every_replica(pair):
    admin_side, user_side = pair
    session = await sign_in(user_side, ALICE)
    assert await roles_seen(user_side) == ["viewer"]
    assert user_side.app[STATE].sessions.cached(session.id) is not None
    alice = await user_side.app[STATE].users.by_email("alice@example.com")
    resp = await patch(admin_side, alice.id, {"roles": ["editor", "auditor", "editor"]})
    assert resp.status == 200
    body = await resp.json()
    assert body["user"]["roles"] == ["editor", "auditor"]
    assert body["updated_sessions"] == 1
    assert await roles_seen(user_side) == ["editor", "auditor"]


async def test_switching_a_user_off_revokes_the_sessions_and_on_again_lets_them_sign_in(pair):
    admin_side, user_side = pair
    await sign_in(user_side, ALICE)
    alice = await user_side.app[STATE].users.by_email("alice@example.com")
    off = await patch(admin_side, alice.id, {"active": False})
    assert (await off.json())["revoked_sessions"] == 1
    assert (await user_side.get("/_authgate/userinfo")).status == 401
    on = await patch(admin_side, alice.id, {"active": True})
    assert (await on.json())["user"]["active"] is True


async def test_taking_admin_from_the_last_admin_is_refused(pair):
    admin_side, _ = pair
    st = admin_side.app[STATE]
    user = await st.users.admit(ALICE, "jit")
    await st.users.update(user, replace(user, roles=("admin",)))
    for body in ({"roles": ["viewer"]}, {"active": False}):
        resp = await patch(admin_side, user.id, body)
        assert resp.status == 409
        assert (await resp.json())["error"] == "last_admin"
    kept = await st.users.get(user.id)
    assert kept.roles == ("admin",) and kept.active


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"role": ["editor"]}, "role: not a field of this request"),
        ({"roles": ["a,b"]}, "roles[0]: a role is 1-64 letters, digits, '.', '_', ':' or '-',"),
        ({"roles": ["ok", " spaced"]}, "roles[1]: a role is"),
        ({"roles": ["x" * 65]}, "roles[0]: a role is"),
        ({"roles": "admin"}, "roles: expected a list of role names"),
        ({"active": "no"}, "active: expected true or false"),
        ({"active": 0}, "active: expected true or false"),
        (["roles"], "the body must be a JSON object"),
        (b"{roles: [}", "the body is not JSON"),
        (b"[" * 60_000, "the body is not JSON"),
        (b'{"roles": ["' + b"a" * 70_000 + b'"]}', "the body is larger than 65536 bytes"),
    ],
    ids=lambda v: str(v)[:30],
)
async def test_bad_bodies_name_the_field_and_change_nothing(pair, body, problem):
    admin_side, _ = pair
    st = admin_side.app[STATE]
    user = await st.users.admit(ALICE, "jit")
    resp = await patch(admin_side, user.id, body)
    assert resp.status == 400
    answer = await resp.json()
    assert answer["error"] == "invalid_request"
    assert answer["message"].startswith(problem)
    assert not any(word in answer["message"] for word in LIBRARY_WORDS)
    assert await st.users.get(user.id) == user


async def test_a_browser_patch_from_another_site_is_refused(pair):
    admin_side, _ = pair
    st = admin_side.app[STATE]
    user = await st.users.admit(ALICE, "jit")
    await sign_in(admin_side, ALICE, roles=("admin",))
    resp = await admin_side.patch(
        f"/_authgate/admin/api/users/{user.id}",
        data=b'{"roles": ["admin"]}',
        headers={"Content-Type": "application/json", "Origin": "https://evil.example"},
    )
    assert resp.status == 403
    assert (await st.users.get(user.id)).roles == ()
