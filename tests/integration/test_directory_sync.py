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

from authgate.app import build_state
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
        assert request.match_info["group"] == GROUP
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
        chunk = self.members[start : start + size]
        body: dict[str, Any] = {
            "@odata.context": f"{request.url.origin()}/v1.0/$metadata#users({','.join(fields)})",
            "value": [{k: m.get(k) for k in fields} for m in chunk],
        }
        if start + size < len(self.members):
            body["@odata.nextLink"] = self.foreign_next_link or str(
                request.url.update_query({"$skiptoken": str(start + size)})
            )
        return web.json_response(body)

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
