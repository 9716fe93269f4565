"""Entra ID group sync against a local server that answers as Microsoft Graph documents.

The fake reproduces the v2.0 token endpoint (client credentials, AADSTS error
bodies) and `transitiveMembers/microsoft.graph.user` with server-driven paging
(`@odata.nextLink` carrying a `$skiptoken`), a throttled page (429 with
`Retry-After` and Graph's error body) and a 503.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from authgate.app import build_state, create_app
from authgate.cli import main
from authgate.directory_sync import DirectorySync, DirectorySyncError, check_member
from authgate.errors import PolicyDenied
from authgate.identity import Identity
from authgate.provisioning import lifecycle_of
from tests.conftest import redis_kv
from tests.scim_support import events, login, oidc, provisioning_settings, session_id

pytestmark = pytest.mark.integration
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
GROUP = "02bd9fd6-8f93-4758-87c3-1fb73740a315"
SECRET = "graph-client-secret"
PAGE = 100


def person(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-0000-0000-{n:012d}",
        "mail": f"user{n}@example.com",
        "userPrincipalName": f"user{n}@example.onmicrosoft.com",
        "mobilePhone": f"+1 555 {n:04d}",
        "displayName": f"User {n}",
        **extra,
    }


def graph_error(code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": "2024-05-21T10:11:12",
                "request-id": "8f2a1c3e-8b1d-4f3a-9a55-2b7c0e1d4f6a",
                "client-request-id": "8f2a1c3e-8b1d-4f3a-9a55-2b7c0e1d4f6a",
            },
        }
    }


@dataclass
class FakeGraph:
    members: list[dict[str, Any]]
    secret: str = SECRET
    faults: dict[int, list[tuple[int, str | None]]] = field(default_factory=dict)
    foreign_next_link: str | None = None
    requests: list[str] = field(default_factory=list)
    tokens_issued: int = 0
    other_groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # An app holding only GroupMember.Read.All: users come with @odata.type and id, the
    # selected properties as null ("limited information returned for inaccessible members").
    limited: bool = False

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append(f"POST {request.path}")
        assert request.match_info["tenant"] == TENANT
        assert form["grant_type"] == "client_credentials" and form["client_id"] == "app-id"
        assert form["scope"] == f"{request.url.origin()}/.default"
        if form["client_secret"] != self.secret:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided."
                    " Ensure the secret being sent in the request is the client secret value,"
                    " not the client secret ID.\r\nTrace ID: 0c9a\r\nCorrelation ID: 1d3b",
                    "error_codes": [7000215],
                    "timestamp": "2024-05-21 10:11:12Z",
                    "trace_id": "0c9a",
                    "correlation_id": "1d3b",
                    "error_uri": "https://login.microsoftonline.com/error?code=7000215",
                },
                status=401,
            )
        self.tokens_issued += 1
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": f"eyJ0eXAiOiJKV1Qi.token{self.tokens_issued}",
            }
        )

    async def transitive_members(self, request: web.Request) -> web.Response:
        self.requests.append(f"GET {request.path_qs}")
        if (
            request.headers.get("Authorization")
            != f"Bearer eyJ0eXAiOiJKV1Qi.token{self.tokens_issued}"
        ):
            return web.json_response(graph_error("InvalidAuthenticationToken", "no"), status=401)
        group = request.match_info["group"]
        if group != GROUP and group not in self.other_groups:
            message = f"Resource '{group}' does not exist or one of its queried reference-property"
            return web.json_response(graph_error("Request_ResourceNotFound", message), status=404)
        members = self.members if group == GROUP else self.other_groups[group]
        fields = request.query["$select"].split(",")
        start = int(request.query.get("$skiptoken", "0"))
        page = start // PAGE
        faults = self.faults.get(page)
        if faults:
            status, retry_after = faults.pop(0)
            headers = {"Retry-After": retry_after} if retry_after else {}
            code = "TooManyRequests" if status == 429 else "ServiceNotAvailable"
            return web.json_response(
                graph_error(code, "Please retry."), status=status, headers=headers
            )
        size = min(int(request.query.get("$top", PAGE)), PAGE)
        chunk = members[start : start + size]
        body: dict[str, Any] = {
            "@odata.context": f"{request.url.origin()}/v1.0/$metadata#users({','.join(fields)})",
            "value": [self._visible(m, fields) for m in chunk],
        }
        if start + size < len(members):
            body["@odata.nextLink"] = self.foreign_next_link or str(
                request.url.update_query({"$skiptoken": str(start + size)})
            )
        return web.json_response(body)

    def _visible(self, member: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        if not self.limited:
            return {k: member.get(k) for k in fields}
        hidden = {k: None for k in fields if k != "id"}
        return {"@odata.type": "#microsoft.graph.user", "id": member["id"], **hidden}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.token)
        app.router.add_get(
            "/v1.0/groups/{group}/transitiveMembers/microsoft.graph.user", self.transitive_members
        )
        return app


@pytest.fixture
async def graph():
    fake = FakeGraph([person(n) for n in range(1, 251)])
    server = TestServer(fake.app())
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    yield fake
    await server.close()


def sync_settings(tmp_path: Path, redis_url: str, graph: FakeGraph, **sync: Any):
    return provisioning_settings(
        tmp_path / "audit.jsonl",
        redis_url,
        connections=[oidc("corp", "jit"), oidc("partner", "jit")],
        directory_sync={
            "tenant_id": TENANT,
            "client_id": "app-id",
            "client_secret": SECRET,
            "group_id": GROUP,
            "connections": ["corp"],
            "login_url": graph.url,  # type: ignore[attr-defined]
            "graph_url": graph.url,  # type: ignore[attr-defined]
            "backoff": "0.5s",
            "max_retries": 3,
            **sync,
        },
    )


@pytest.fixture
async def world(tmp_path, redis_url, graph):
    """authgate's state on Redis, an HTTP client, and a recording sleep."""
    settings = sync_settings(tmp_path, redis_url, graph)
    st = build_state(settings, redis_kv(redis_url))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with aiohttp.ClientSession() as http:
        sync = DirectorySync(
            settings.directory_sync[0], st.kv, lifecycle_of(st), st.audit, http, sleep
        )
        yield st, sync, slept
    await st.kv.close()


def ident(n: int, connection: str = "corp") -> Identity:
    return Identity(
        connection=connection,
        subject=f"sub-{n}",
        email=f"user{n}@example.com",
        email_verified=True,
        name=f"User {n}",
    )


async def test_paging_throttling_and_5xx_backoff(world, graph, tmp_path):
    _, sync, slept = world
    graph.faults = {1: [(429, "7")], 2: [(503, None), (503, None)]}
    result = await sync.run_once()
    assert result.members == 250 and result.added == 250 and result.removed == 0
    assert slept == [7.0, 0.5, 1.0], "Retry-After honoured, then exponential backoff"
    pages = [r for r in graph.requests if r.startswith("GET")]
    assert len(pages) == 6, "3 pages, one throttled retry and two 5xx retries"
    assert "$select=id,userPrincipalName,mail,mobilePhone,displayName" in pages[0]
    assert "$skiptoken=100" in pages[1] and "$skiptoken=200" in pages[-1]
    keys = await sync.allowlist.keys()
    assert {"user1@example.com", "user250@example.onmicrosoft.com"} <= keys
    assert events(tmp_path / "audit.jsonl", "directory.sync.completed")[-1]["members"] == 250


async def test_member_removed_between_syncs_loses_access_and_sessions(world, graph, tmp_path):
    st, sync, _ = world
    await sync.run_once()
    alice = session_id(st, await login(st, ident(1)))
    bob = session_id(st, await login(st, ident(2)))
    outsider = Identity(
        connection="partner", subject="p-9", email="outsider@example.com", email_verified=True
    )
    partner = session_id(st, await login(st, outsider))
    graph.members = [m for m in graph.members if m["mail"] != "user2@example.com"]
    result = await sync.run_once()
    assert result.removed == 1 and result.sessions_revoked == 1
    assert await st.sessions.load(alice) is not None
    assert await st.sessions.load(bob) is None, "the leaver's session ends at once"
    assert await st.sessions.load(partner) is not None, "other connections are not synced"
    with pytest.raises(PolicyDenied) as refused:
        await login(st, ident(2))
    assert refused.value.reason == "not_a_member"
    audit = tmp_path / "audit.jsonl"
    [removed] = events(audit, "directory.sync.member_removed")
    assert removed["email"] == "user2@example.com"
    assert events(audit, "sso.login.failed")[-1]["reason"] == "not_a_member"
    revoked = events(audit, "session.revoked")[-1]
    assert revoked["reason"] == "not_a_member" and revoked["sessions"] == 1


async def test_token_failure_keeps_the_last_good_list_and_reports_it(world, graph, tmp_path):
    st, sync, _ = world
    await sync.run_once()
    before = await sync.allowlist.keys()
    graph.secret = "rotated-at-the-idp"
    graph.members = graph.members[:1]
    with pytest.raises(DirectorySyncError) as failed:
        await sync.run_once()
    assert failed.value.reason == "token_failed"
    assert "invalid_client" in failed.value.detail and "AADSTS7000215" in failed.value.detail
    assert SECRET not in str(failed.value)
    assert await sync.allowlist.keys() == before
    status = await sync.allowlist.status()
    assert status["last_failure_reason"] == "token_failed" and status["members"] == "250"
    [event] = events(tmp_path / "audit.jsonl", "directory.sync.failed")
    assert event["reason"] == "token_failed" and event["kept_members"] == 250
    await login(st, ident(200))


async def test_throttling_that_never_ends_fails_without_touching_the_list(world, graph):
    _, sync, slept = world
    await sync.run_once()
    graph.faults = {0: [(429, "600")] * 10}
    with pytest.raises(DirectorySyncError) as failed:
        await sync.run_once()
    assert failed.value.reason == "graph_unavailable"
    assert slept == [300.0, 300.0, 300.0], "Retry-After is capped by max_retry_after"
    assert len(await sync.allowlist.keys()) == 750


async def test_next_link_off_graph_is_refused(world, graph):
    _, sync, _ = world
    graph.foreign_next_link = "https://attacker.example.net/collect?$skiptoken=100"
    with pytest.raises(DirectorySyncError) as failed:
        await sync.run_once()
    assert failed.value.reason == "bad_next_link"
    assert await sync.allowlist.keys() is None


async def test_no_list_yet_means_nobody_gets_in(world):
    st, sync, _ = world
    with pytest.raises(PolicyDenied) as refused:
        await check_member(st.kv, [sync.cfg], ident(1))
    assert refused.value.reason == "not_a_member"
    await check_member(st.kv, [sync.cfg], ident(1, "partner"))


async def test_cli_sync_once_with_export(tmp_path, redis_url, graph, capsys):
    graph.members = [
        person(1),
        person(2, mail=None, mobilePhone=None),
        person(3, mobilePhone="+1\t555\n=cmd"),
    ]
    settings = sync_settings(tmp_path, redis_url, graph)
    config = tmp_path / "authgate.yaml"
    config.write_text(json.dumps(settings.model_dump(mode="json", exclude_none=True)))
    out = tmp_path / "members.tsv"
    code = await asyncio.to_thread(
        main, ["directory", "sync", "--once", "--export", str(out), "--config", str(config)]
    )
    assert code == 0
    assert "3 members (3 added, 0 removed)" in capsys.readouterr().out
    assert out.read_text().splitlines() == [
        "user1@example.com\t+1 555 0001",
        "user2@example.onmicrosoft.com\t",
        "user3@example.com\t+1 555 =cmd",
    ]
    graph.secret = "rotated"
    code = await asyncio.to_thread(main, ["directory", "sync", "--once", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1 and "token_failed" in err
    assert "the last good member list stays in force (3 members from" in err


# --- several configurations, export templates ---------------------------------------------------

COMPOSE = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"


def compose_settings(tmp_path: Path, redis_url: str, graph: FakeGraph, **extra: Any):
    """The Secure Mail guide's two configurations: sender allowlist and SMS users."""
    common = {
        "tenant_id": TENANT,
        "client_id": "app-id",
        "client_secret": SECRET,
        "login_url": graph.url,  # type: ignore[attr-defined]
        "graph_url": graph.url,  # type: ignore[attr-defined]
        "backoff": "0.5s",
        "max_retries": 1,
    }
    return provisioning_settings(
        tmp_path / "audit.jsonl",
        redis_url,
        connections=[oidc("corp", "jit"), oidc("partner", "jit")],
        directory_sync=[
            {
                **common,
                "name": "envelope",
                "group_id": GROUP,
                "connections": ["corp"],
                "select": ["mail"],
                "export": {
                    "path": str(tmp_path / "gsm_auth_auto.txt"),
                    "template": "* {userPrincipalName:lower} <reg> - 0",
                },
            },
            {
                **common,
                "name": "compose",
                "group_id": COMPOSE,
                "connections": ["corp"],
                "select": ["mail", "mobilePhone"],
                "interval": "0.2s",
                "export": {
                    "path": str(tmp_path / "gsm_list.txt"),
                    "template": "{mail} {mobilePhone}",
                    "key": ["mail", "mobilePhone"],
                },
            },
        ],
        **extra,
    )


@pytest.fixture
async def two(tmp_path, redis_url, graph):
    graph.members = [person(1), person(2, userPrincipalName="User2@Example.onmicrosoft.com")]
    graph.other_groups[COMPOSE] = [person(3), person(4, mobilePhone=None), person(5, mail=None)]
    settings = compose_settings(tmp_path, redis_url, graph)
    st = build_state(settings, redis_kv(redis_url))

    async def no_sleep(seconds: float) -> None:
        return None

    async with aiohttp.ClientSession() as http:
        syncs = [
            DirectorySync(
                cfg, st.kv, lifecycle_of(st), st.audit, http, no_sleep, settings.directory_sync
            )
            for cfg in settings.directory_sync
        ]
        yield st, syncs
    await st.kv.close()


async def test_each_configuration_reads_its_group_with_id_and_upn_always_selected(two, graph):
    _, (envelope, compose) = two
    assert (await envelope.run_once()).members == 2
    assert (await compose.run_once()).members == 3
    pages = [r for r in graph.requests if r.startswith("GET")]
    assert f"/groups/{GROUP}/" in pages[0] and "$select=id,userPrincipalName,mail&" in pages[0]
    assert f"/groups/{COMPOSE}/" in pages[1]
    assert "$select=id,userPrincipalName,mail,mobilePhone&" in pages[1]


async def test_a_connection_guarded_by_two_configurations_admits_members_of_either(two):
    st, (envelope, compose) = two
    await envelope.run_once()
    await login(st, ident(1))
    await compose.run_once()
    await login(st, ident(3))
    with pytest.raises(PolicyDenied) as refused:
        await login(st, ident(9))
    assert refused.value.reason == "not_a_member"
    assert GROUP in refused.value.detail and COMPOSE in refused.value.detail


async def test_a_sync_revokes_only_those_in_none_of_the_lists(two, graph):
    st, (envelope, compose) = two
    await envelope.run_once()
    await compose.run_once()
    in_compose = session_id(st, await login(st, ident(3)))
    in_envelope = session_id(st, await login(st, ident(1)))
    graph.members = [person(2)]
    result = await envelope.run_once()
    assert result.sessions_revoked == 1
    assert await st.sessions.load(in_envelope) is None
    assert await st.sessions.load(in_compose) is not None, "still in the compose group"


async def test_exports_follow_each_template_and_count_empty_keys(two, tmp_path):
    _, (envelope, compose) = two
    await envelope.run_once()
    await compose.run_once()
    assert (await envelope.write_export()) is not None
    exported = await compose.write_export()
    assert (exported.lines, exported.skipped) == (1, 2)
    assert (tmp_path / "gsm_auth_auto.txt").read_text().splitlines() == [
        "* user1@example.onmicrosoft.com <reg> - 0",
        "* user2@example.onmicrosoft.com <reg> - 0",
    ]
    assert (tmp_path / "gsm_list.txt").read_text() == "user3@example.com +1 555 0003\n"


async def test_the_export_is_replaced_by_rename_and_only_when_the_list_changed(
    two, graph, tmp_path
):
    _, (envelope, _) = two
    await envelope.run_once()
    await envelope.write_export()
    path = tmp_path / "gsm_auth_auto.txt"
    first = path.stat().st_ino
    assert await envelope.write_export() is None, "the same list is not written again"
    graph.members = [person(7)]
    await envelope.run_once()
    await envelope.write_export()
    assert path.stat().st_ino != first, "a new file renamed over the old one"
    assert path.read_text() == "* user7@example.onmicrosoft.com <reg> - 0\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


async def test_with_group_member_read_all_alone_members_come_without_properties(
    two, graph, tmp_path
):
    """Graph answers the members with id only: every line is skipped, nobody matches by email,
    and the sync says which permission is missing."""
    st, (_, compose) = two
    graph.limited = True
    result = await compose.run_once()
    assert result.members == 3
    exported = await compose.write_export()
    assert (exported.lines, exported.skipped) == (0, 3)
    with pytest.raises(PolicyDenied) as refused:
        await login(st, ident(3))
    assert refused.value.reason == "not_a_member"
    [done] = events(tmp_path / "audit.jsonl", "directory.sync.completed")
    assert done["without_user_principal_name"] == 3


async def test_a_group_graph_does_not_know_fails_that_configuration_only(two, graph):
    _, (envelope, compose) = two
    del graph.other_groups[COMPOSE]
    await envelope.run_once()
    with pytest.raises(DirectorySyncError) as failed:
        await compose.run_once()
    assert failed.value.reason == "graph_error" and "404" in failed.value.detail
    assert await envelope.allowlist.keys()
    assert await compose.allowlist.keys() is None


async def test_the_server_writes_the_export_on_its_schedule(
    tmp_path, redis_url, graph, aiohttp_client
):
    graph.other_groups[COMPOSE] = [person(3)]
    settings = compose_settings(tmp_path, redis_url, graph)
    await aiohttp_client(create_app(settings, redis_kv(redis_url)))
    target = tmp_path / "gsm_list.txt"
    for _ in range(100):
        if target.exists():
            break
        await asyncio.sleep(0.05)
    assert target.read_text() == "user3@example.com +1 555 0003\n"
    graph.other_groups[COMPOSE] = [person(3), person(4)]
    for _ in range(100):
        if len(target.read_text().splitlines()) == 2:
            break
        await asyncio.sleep(0.05)
    assert target.read_text().splitlines()[1] == "user4@example.com +1 555 0004"


async def test_cli_syncs_every_configuration_or_the_named_one(tmp_path, redis_url, graph, capsys):
    graph.other_groups[COMPOSE] = [person(3), person(4, mobilePhone=None)]
    settings = compose_settings(tmp_path, redis_url, graph)
    config = tmp_path / "authgate.yaml"
    config.write_text(json.dumps(settings.model_dump(mode="json", exclude_none=True)))
    code = await asyncio.to_thread(main, ["directory", "sync", "--once", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 0
    assert "envelope: group" in out and "compose: group" in out
    assert f"exported 1 line(s) to {tmp_path / 'gsm_list.txt'}; 1 member(s) skipped" in out
    extra = tmp_path / "extra.txt"
    argv = ["directory", "sync", "--once", "--export", str(extra), "--config", str(config)]
    assert await asyncio.to_thread(main, argv) == 2
    assert "--export writes one list: add --name (envelope, compose)" in capsys.readouterr().err
    assert await asyncio.to_thread(main, [*argv, "--name", "envelope"]) == 0
    assert extra.read_text().startswith("* user1@example.onmicrosoft.com <reg> - 0\n")
    assert await asyncio.to_thread(main, [*argv[:-2], "--name", "nope", *argv[-2:]]) == 2
    assert "no directory_sync is named 'nope' (envelope, compose)" in capsys.readouterr().err
