"""Connection retirement: removing a connection retires its users, unless no admin could sign in."""

from __future__ import annotations

import asyncio

import pytest

from authgate.app import create_app
from authgate.cli import main
from authgate.errors import PolicyDenied
from authgate.identity import Identity
from authgate.retirement import RetirementRefused
from authgate.scim.tokens import ScimTokens
from authgate.web.state import STATE
from tests.conftest import redis_kv
from tests.scim_support import events, login, oidc, provisioning_settings, session_id

pytestmark = pytest.mark.integration
ADMINS_EVERYWHERE = {"role_mappings": [{"group": "Admins", "roles": ["admin"]}]}
ADMINS_ONLY_ON_PARTNER = {
    "role_mappings": [{"group": "Admins", "roles": ["admin"], "connection": "partner"}]
}


def settings_for(tmp_path, redis_url, connections, access=ADMINS_EVERYWHERE):
    return provisioning_settings(
        tmp_path / "audit.jsonl",
        redis_url,
        connections=[oidc(c, "jit") for c in connections],
        access=access,
    )


def partner_user(n: int) -> Identity:
    return Identity(
        connection="partner",
        subject=f"p-{n}",
        email=f"p{n}@partner.example.com",
        email_verified=True,
        groups=("Admins",),
    )


async def start(aiohttp_client, settings, redis_url, force=False):
    return await aiohttp_client(create_app(settings, redis_kv(redis_url), force_retire=force))


async def populate(aiohttp_client, tmp_path, redis_url, access=ADMINS_EVERYWHERE):
    """First deployment: two connections, partner users signed in, a partner SCIM token."""
    client = await start(
        aiohttp_client, settings_for(tmp_path, redis_url, ["corp", "partner"], access), redis_url
    )
    st = client.app[STATE]
    sids = [session_id(st, await login(st, partner_user(n))) for n in (1, 2)]
    await ScimTokens(st.kv).create("partner")
    await client.close()
    return sids


async def test_removing_a_connection_retires_its_users_and_sessions(
    aiohttp_client, tmp_path, redis_url
):
    sids = await populate(aiohttp_client, tmp_path, redis_url)
    client = await start(aiohttp_client, settings_for(tmp_path, redis_url, ["corp"]), redis_url)
    st = client.app[STATE]
    for sid in sids:
        assert await st.sessions.load(sid) is None
    retired = await st.users.list_users("partner")
    assert len(retired) == 2 and all(u.retired and not u.active for u in retired)
    assert await ScimTokens(st.kv).list() == []
    audit = tmp_path / "audit.jsonl"
    assert len(events(audit, "user.retired")) == 2
    [done] = events(audit, "connection.retired")
    assert done["connection"] == "partner" and done["users"] == 2
    with pytest.raises(PolicyDenied) as refused:
        await st.users.admit(partner_user(1), "jit")
    assert refused.value.reason == "user_disabled", "a retired user stays out if it comes back"


async def test_a_change_that_strands_every_admin_is_refused_unless_forced(
    aiohttp_client, tmp_path, redis_url
):
    sids = await populate(aiohttp_client, tmp_path, redis_url, ADMINS_ONLY_ON_PARTNER)
    stranded = settings_for(tmp_path, redis_url, ["corp"], ADMINS_ONLY_ON_PARTNER)
    with pytest.raises(RetirementRefused) as refused:
        await start(aiohttp_client, stranded, redis_url)
    assert "would leave no enabled connection able to sign in" in str(refused.value)
    assert "--force" in str(refused.value)
    check = await start(
        aiohttp_client,
        settings_for(tmp_path, redis_url, ["corp", "partner"], ADMINS_ONLY_ON_PARTNER),
        redis_url,
    )
    st = check.app[STATE]
    assert all(u.active for u in await st.users.list_users("partner")), "nothing was retired"
    assert await st.sessions.load(sids[0]) is not None
    await check.close()
    forced = await start(aiohttp_client, stranded, redis_url, force=True)
    assert all(u.retired for u in await forced.app[STATE].users.list_users("partner"))


async def test_an_admin_assigned_directly_keeps_a_connection_safe(
    aiohttp_client, tmp_path, redis_url
):
    await populate(aiohttp_client, tmp_path, redis_url, ADMINS_ONLY_ON_PARTNER)
    client = await start(
        aiohttp_client,
        settings_for(tmp_path, redis_url, ["corp", "partner"], ADMINS_ONLY_ON_PARTNER),
        redis_url,
    )
    await client.app[STATE].users.create("corp", "ops", "ops@example.com", roles=("admin",))
    await client.close()
    survivor = await start(
        aiohttp_client,
        settings_for(tmp_path, redis_url, ["corp"], ADMINS_ONLY_ON_PARTNER),
        redis_url,
    )
    assert all(u.retired for u in await survivor.app[STATE].users.list_users("partner"))


def write_config(tmp_path, redis_url, connections, access=ADMINS_EVERYWHERE):
    settings = settings_for(tmp_path, redis_url, connections, access)
    path = tmp_path / f"{'-'.join(connections)}.yaml"
    path.write_text(settings.model_dump_json(exclude_none=True))
    return str(path)


async def test_cli_retire_connection_user_and_tokens(aiohttp_client, tmp_path, redis_url, capsys):
    sids = await populate(aiohttp_client, tmp_path, redis_url)
    both = write_config(tmp_path, redis_url, ["corp", "partner"])

    def cli(*args: str) -> int:
        return main([*args, "--config", both])

    assert await asyncio.to_thread(cli, "connections", "retire", "partner") == 2
    assert "still enabled" in capsys.readouterr().err
    assert await asyncio.to_thread(cli, "users", "retire", "p1@partner.example.com") == 0
    assert "retired; sessions revoked" in capsys.readouterr().out
    client = await start(
        aiohttp_client, settings_for(tmp_path, redis_url, ["corp", "partner"]), redis_url
    )
    st = client.app[STATE]
    assert await st.sessions.load(sids[0]) is None and await st.sessions.load(sids[1]) is not None
    assert await asyncio.to_thread(cli, "connections", "retire", "partner", "--force") == 0
    assert "connection partner: 1 user(s) retired" in capsys.readouterr().out
    assert await st.sessions.load(sids[1]) is None

    assert await asyncio.to_thread(cli, "scim", "token", "create", "--connection", "corp") == 0
    out = capsys.readouterr().out
    secret = out.splitlines()[1].strip()
    assert secret.startswith("agscim_")
    assert "Tenant URL: https://app.example.com/_authgate/scim/v2" in out
    [info] = await ScimTokens(st.kv).list()
    assert (await ScimTokens(st.kv).verify(secret)).id == info.id
    assert secret not in repr(await st.kv.get("scim-token-id:" + info.id))
    assert await asyncio.to_thread(cli, "scim", "token", "list") == 0
    listed = capsys.readouterr().out
    assert info.id in listed and secret not in listed
    assert await asyncio.to_thread(cli, "scim", "token", "revoke", info.id) == 0
    assert await ScimTokens(st.kv).verify(secret) is None
    assert await asyncio.to_thread(cli, "scim", "token", "revoke", info.id) == 1
    assert await asyncio.to_thread(cli, "scim", "token", "create", "--connection", "nope") == 2


async def test_disabling_the_only_way_an_admin_signs_in_is_refused_unless_forced(
    aiohttp_client, tmp_path, redis_url
):
    await populate(aiohttp_client, tmp_path, redis_url, ADMINS_ONLY_ON_PARTNER)
    stranded = provisioning_settings(
        tmp_path / "audit.jsonl",
        redis_url,
        connections=[oidc("corp", "jit"), {**oidc("partner", "jit"), "enabled": False}],
        access=ADMINS_ONLY_ON_PARTNER,
    )
    with pytest.raises(RetirementRefused) as refused:
        await start(aiohttp_client, stranded, redis_url)
    assert "disabling partner would leave no enabled connection" in str(refused.value)
    forced = await start(aiohttp_client, stranded, redis_url, force=True)
    assert forced.app[STATE].connections.get("partner").engine is None


async def test_disabling_a_connection_another_admin_path_covers_is_allowed(
    aiohttp_client, tmp_path, redis_url
):
    await populate(aiohttp_client, tmp_path, redis_url)
    fine = provisioning_settings(
        tmp_path / "audit.jsonl",
        redis_url,
        connections=[oidc("corp", "jit"), {**oidc("partner", "jit"), "enabled": False}],
        access=ADMINS_EVERYWHERE,
    )
    client = await start(aiohttp_client, fine, redis_url)
    assert client.app[STATE].connections.get("partner").active is False
