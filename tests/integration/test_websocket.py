"""Websockets relayed through authgate to the echo upstream's `/__ws/probe`.

The probe first reports the upgrade request it received (headers, path,
subprotocol), then echoes, closes on `close:<code>` and records the code of
any close the client started, so both directions of the close are visible.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict
from yarl import URL

from authgate.app import create_app
from authgate.session.memory import MemoryStore
from authgate.settings import Settings
from authgate.upstream import _close_code
from authgate.web.state import STATE
from tests.conftest import make_settings, sign_in
from tests.servers import free_port

MARK = "spoofed-by-client"
HANDSHAKE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.fixture
async def authgate(
    serve: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> TestClient:
    """authgate behind either front end of the production listener (an upgrade is aiohttp's)."""
    return await serve(create_app(settings_factory(), MemoryStore()))


async def _hello(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return json.loads(await ws.receive_str(timeout=5))


def _headers(report: dict[str, Any]) -> dict[str, str]:
    return {k.lower().replace("_", "-"): v for k, v in report["headers"]}


async def _upstream_closes(upstream: TestServer, count: int) -> list[int]:
    """Close codes the upstream recorded, once `count` have arrived (the close is async)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.get(upstream.make_url("/__ws/closes")) as resp:
                closes = await resp.json()
            if len(closes) >= count:
                return closes
            await asyncio.sleep(0.02)
    return closes


async def test_text_and_binary_messages_are_relayed(authgate: TestClient):
    await sign_in(authgate)
    async with authgate.ws_connect("/__ws/probe", protocols=("chat",)) as ws:
        await _hello(ws)
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "echo:hello"
        payload = os.urandom(1_000_000)
        await ws.send_bytes(payload)
        assert await ws.receive_bytes(timeout=5) == payload[::-1]
        await ws.send_str("ünïcode ✓")
        assert await ws.receive_str(timeout=5) == "echo:ünïcode ✓"


async def test_ping_is_relayed_and_answered_by_the_upstream(authgate: TestClient):
    await sign_in(authgate)
    async with authgate.ws_connect("/__ws/probe", autoping=False) as ws:
        await _hello(ws)
        await ws.ping(b"are-you-there")
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.PONG
        assert msg.data == b"are-you-there"


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(("chat",), "chat"), (("superchat", "chat"), "superchat"), (("nope",), None)],
)
async def test_subprotocol_is_negotiated_by_the_upstream(
    authgate: TestClient, offered: tuple[str, ...], chosen: str | None
):
    await sign_in(authgate)
    async with authgate.ws_connect("/__ws/probe", protocols=offered) as ws:
        report = await _hello(ws)
        assert report["protocol"] == chosen
        assert ws.protocol == chosen
        offered_upstream = _headers(report)["sec-websocket-protocol"].split(",")
        assert [p.strip() for p in offered_upstream] == list(offered)


async def test_client_close_reaches_the_upstream_with_its_code(
    authgate: TestClient, upstream: TestServer
):
    await sign_in(authgate)
    ws = await authgate.ws_connect("/__ws/probe")
    await _hello(ws)
    await ws.close(code=4001, message=b"client bye")
    assert await _upstream_closes(upstream, 1) == [4001]


async def test_upstream_close_reaches_the_client_with_its_code(authgate: TestClient):
    await sign_in(authgate)
    async with authgate.ws_connect("/__ws/probe") as ws:
        await _hello(ws)
        await ws.send_str("close:4003")
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 4003
        assert ws.closed or (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSED
        assert ws.close_code == 4003


async def test_upgrade_without_session_is_refused_with_401(authgate: TestClient):
    resp = await authgate.get("/__ws/probe", headers=HANDSHAKE)
    assert resp.status == 401
    assert "Upgrade" not in resp.headers
    assert "Sec-WebSocket-Accept" not in resp.headers
    body = await resp.json()
    assert body["error"] == "unauthenticated"
    assert body["correlation_id"] == resp.headers["X-Request-Id"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await authgate.ws_connect("/__ws/probe")
    assert refused.value.status == 401


async def test_upgrade_with_a_revoked_session_is_refused(authgate: TestClient):
    session = await sign_in(authgate)
    await authgate.app[STATE].sessions.delete(session)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await authgate.ws_connect("/__ws/probe")
    assert refused.value.status == 401


def _spoofed() -> CIMultiDict[str]:
    spoof: CIMultiDict[str] = CIMultiDict()
    for name in (
        "X-User",
        "x-email",
        "X_USER_ID",
        "x_groups",
        "X-Roles",
        "X-Auth-Connection",
        "X-Authgate-Assertion",
        "X-Auth-Request-User",
        "X-Forwarded-User",
    ):
        spoof.add(name, MARK)
    spoof.add("X-User", MARK + "-again")
    spoof.add("X-Groups", MARK)
    spoof.add("X-Forwarded-For", "6.6.6.6")
    return spoof


async def test_identity_headers_sent_by_the_client_are_stripped_on_upgrade(authgate: TestClient):
    session = await sign_in(authgate)
    async with authgate.ws_connect("/__ws/probe", headers=_spoofed()) as ws:
        report = await _hello(ws)
    for name, value in report["headers"]:
        assert MARK not in value, name
    seen = _headers(report)
    assert seen["x-user"] == "alice@example.com"
    assert seen["x-user-id"] == session.user_id
    assert seen["x-groups"] == "Engineering"
    assert seen["x-authgate-assertion"].count(".") == 2
    assert seen["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    assert report["raw_path"] == "/__ws/probe"


async def test_identity_headers_are_stripped_on_a_public_websocket(
    serve: Callable[..., Any], settings_factory: Callable[..., Settings]
):
    settings = settings_factory(access={"public_paths": ["/__ws/"]})
    client = await serve(create_app(settings, MemoryStore()))
    target = URL("/__ws/probe?x=%2F&y=%2e", encoded=True)
    async with client.ws_connect(target, headers=_spoofed()) as ws:
        report = await _hello(ws)
    for name, value in report["headers"]:
        assert MARK not in value, name
    assert "x-user" not in _headers(report)
    assert report["raw_path"] == "/__ws/probe?x=%2F&y=%2e"


async def test_unreachable_upstream_refuses_the_upgrade_with_502(
    serve: Callable[..., Any],
):
    settings = make_settings(f"http://127.0.0.1:{free_port()}")
    client = await serve(create_app(settings, MemoryStore()))
    await sign_in(client)
    resp = await client.get("/__ws/probe", headers=HANDSHAKE)
    assert resp.status == 502
    assert (await resp.json())["error"] == "upstream_unavailable"
    assert "Sec-WebSocket-Accept" not in resp.headers


async def test_client_vanishing_without_close_frame_closes_the_upstream(
    authgate: TestClient, upstream: TestServer
):
    """A dropped TCP connection has no close frame; the upstream socket must still be closed
    with a code that may legally be sent. The production listener does not cancel the
    handler, so the relay reads the drop as 1006 and sends 1001 (`_close_code`); aiohttp's
    TestServer, which cancels it, used to make this 1000."""
    session = await sign_in(authgate)
    reader, writer = await asyncio.open_connection(authgate.host, authgate.port)
    cookie = f"{authgate.app[STATE].cookies.session_name}={session.id}"
    lines = ["GET /__ws/probe HTTP/1.1", "Host: x", f"Cookie: {cookie}"]
    lines += [f"{k}: {v}" for k, v in HANDSHAKE.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    writer.transport.abort()
    assert await _upstream_closes(upstream, 1) == [1001]


@pytest.mark.parametrize(
    ("reported", "sent"),
    [(None, 1000), (1000, 1000), (1001, 1001), (4001, 4001), (1005, 1000), (1006, 1001),
     (1015, 1001), (1004, 1001)],
)  # fmt: skip
def test_close_codes_passed_on_are_always_sendable(reported: int | None, sent: int):
    assert _close_code(SimpleNamespace(close_code=reported)) == sent  # type: ignore[arg-type]
