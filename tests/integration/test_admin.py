"""The admin API across replicas sharing one store (memory, Redis, Sentinel, Cluster).

Two authgate apps on the same store stand for two replicas: what the admin
does on one must hold on the other at once, and what the other records
(a failed login, a new session) must show on the admin's replica.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp.test_utils import TestClient

from authgate.app import create_app
from authgate.identity import Identity
from authgate.settings import Settings
from authgate.web.state import STATE
from tests.conftest import StoreBackend, sign_in

TOKEN = "9d0c6b2f1e4a7c3b8e5d2f9a0c1b4e7d6a3f8c2e5b9d1a4c7e0f3b6d9a2c5e8f"
ORIGIN = "https://app.example.com"
ALICE = Identity(
    connection="corp", subject="sub-alice", email="alice@example.com", email_verified=True,
    name="Alice", groups=("Engineering",),
)  # fmt: skip
ROOT = Identity(
    connection="corp", subject="sub-root", email="root@example.com", email_verified=True,
    name="Root", groups=("Ops",),
)  # fmt: skip


async def replicas(
    aiohttp_client: Callable[..., Any], settings: Settings, backend: StoreBackend
) -> tuple[TestClient, TestClient]:
    first = await aiohttp_client(create_app(settings, backend.client()))
    second = await aiohttp_client(create_app(settings, backend.client()))
    return first, second


async def userinfo_status(client: TestClient) -> int:
    return (await client.get("/_authgate/userinfo")).status


async def test_admin_actions_hold_on_every_replica(
    aiohttp_client: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    store_backend: StoreBackend,
) -> None:
    admin_side, user_side = await replicas(
        aiohttp_client, settings_factory(admin={"token": TOKEN}), store_backend
    )
    await sign_in(user_side, ALICE)
    await sign_in(admin_side, ROOT, roles=("admin",))
    await user_side.app[STATE].status.failure("corp", "email_unverified", "cid-from-b")

    status = await (await admin_side.get("/_authgate/admin/api/status")).json()
    assert status["active_sessions"] == 2
    assert status["connections"][0]["last_failure"]["reason"] == "email_unverified"
    assert status["connections"][0]["last_failure"]["correlation_id"] == "cid-from-b"

    alice = await admin_side.app[STATE].users.by_email("alice@example.com")
    forged = await admin_side.post(
        f"/_authgate/admin/api/users/{alice.id}/retire", headers={"Origin": "https://evil.example"}
    )
    assert forged.status == 403
    assert (await forged.json())["error"] == "cross_origin_request"
    assert (await user_side.app[STATE].users.get(alice.id)).active
    assert await userinfo_status(user_side) == 200

    retired = await admin_side.post(
        f"/_authgate/admin/api/users/{alice.id}/retire", headers={"Origin": ORIGIN}
    )
    assert retired.status == 200
    assert (await retired.json())["revoked_sessions"] == 1
    assert await userinfo_status(user_side) == 401
    assert not (await user_side.app[STATE].users.get(alice.id)).active

    after = await (await user_side.get("/_authgate/admin/api/status", headers={
        "Authorization": f"Bearer {TOKEN}"})).json()  # fmt: skip
    assert after["active_sessions"] == 1
    assert after["users"] == {"total": 2, "active": 1}


async def test_revoking_sessions_keeps_the_user_and_ends_every_session(
    aiohttp_client: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    store_backend: StoreBackend,
) -> None:
    admin_side, user_side = await replicas(
        aiohttp_client, settings_factory(admin={"token": TOKEN}), store_backend
    )
    await sign_in(admin_side, ALICE)
    await sign_in(user_side, ALICE)
    alice = await admin_side.app[STATE].users.by_email("alice@example.com")
    resp = await admin_side.post(
        f"/_authgate/admin/api/users/{alice.id}/revoke-sessions",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert (await resp.json())["revoked_sessions"] == 2
    assert await userinfo_status(user_side) == 401
    assert await userinfo_status(admin_side) == 401
    assert (await user_side.app[STATE].users.get(alice.id)).active


async def _admin_user(client: TestClient, identity: Identity):
    """A user whose stored roles hold `admin`, as a login through an admin mapping leaves it."""
    st = client.app[STATE]
    user = await st.users.admit(identity, "jit")
    return await st.users.update(user, replace(user, roles=("admin",)))


async def test_the_last_admin_cannot_be_retired_through_the_api(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(settings_factory(admin={"token": TOKEN})))
    root = await _admin_user(client, ROOT)
    await sign_in(client, ROOT, roles=("admin",))
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    refused = await client.post(f"/_authgate/admin/api/users/{root.id}/retire", headers=headers)
    assert refused.status == 409
    body = await refused.json()
    assert body["error"] == "last_admin"
    assert "map an IdP group to it in access.role_mappings" in body["detail"]
    kept = await client.app[STATE].users.get(root.id)
    assert kept.active and not kept.retired
    assert await userinfo_status(client) == 200

    other = await _admin_user(client, ALICE)
    retired = await client.post(f"/_authgate/admin/api/users/{root.id}/retire", headers=headers)
    assert retired.status == 200
    assert (await retired.json())["revoked_sessions"] == 1
    gone = await client.app[STATE].users.get(root.id)
    assert not gone.active and gone.retired
    assert await userinfo_status(client) == 401
    last = await client.post(f"/_authgate/admin/api/users/{other.id}/retire", headers=headers)
    assert last.status == 409


async def test_a_role_mapping_that_grants_admin_keeps_a_way_in(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(
        admin={"token": TOKEN},
        access={"role_mappings": [{"group": "Ops", "roles": ["admin"]}]},
    )
    client = await aiohttp_client(create_app(settings))
    root = await _admin_user(client, ROOT)
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    retired = await client.post(f"/_authgate/admin/api/users/{root.id}/retire", headers=headers)
    assert retired.status == 200
