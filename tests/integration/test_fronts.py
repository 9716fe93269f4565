"""The two front ends give the same answer to the same bytes, header for header.

One authgate behind the production listener; each request is written twice
on raw sockets, once with the fast path on and once with every request
handed to aiohttp (`FrontServer.fast_path`), and the two answers, and what
the upstream received, are compared whole. Only `Date` may differ, and the
`Server` aiohttp adds to an answer it makes itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from authgate.app import create_app
from authgate.session.memory import MemoryStore
from authgate.settings import Settings
from authgate.web.state import STATE
from tests.conftest import sign_in
from tests.fronts import FrontServer
from tests.rawhttp import Raw, read_response
from tests.servers import free_port

AUTH = "/_authgate/auth"
MARK = "spoofed-by-client"


@pytest.fixture
def both(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> Callable[..., Any]:
    async def start(**overrides: Any) -> TestClient:
        app = create_app(settings_factory(**overrides), MemoryStore())
        return await aiohttp_client(FrontServer(app))

    return start


async def _send(client: TestClient, data: bytes, method: str) -> Raw:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader, method)
    finally:
        writer.close()


async def answers(
    client: TestClient, target: str, headers: list[tuple[str, str]], method: str = "GET"
) -> tuple[Raw, Raw]:
    """The same request through the fast path, then through aiohttp; each checked as such."""
    server = client.server
    assert isinstance(server, FrontServer) and server.front is not None
    lines = [f"{method} {target} HTTP/1.1", "Host: app.example.com", *map(": ".join, headers)]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    answered: list[Raw] = []
    for fast in (True, False):
        server.fast_path(fast)
        served = server.front.served
        answered.append(await _send(client, data, method))
        assert server.front.served == served + fast, "fast path" if fast else "aiohttp"
    return answered[0], answered[1]


def same(fast: Raw, slow: Raw) -> None:
    assert fast.status == slow.status
    assert fast.comparable() == slow.comparable()
    assert fast.body == slow.body


def cookie(client: TestClient, sid: str) -> tuple[str, str]:
    return ("Cookie", f"theme=dark; {client.app[STATE].cookies.session_name}={sid}; JSESSIONID=1")


@pytest.mark.parametrize(
    "overrides",
    [{}, {"headers": {"oauth2_proxy_compat": True}}, {"headers": {"assertion": {"header": None}}}],
)
@pytest.mark.parametrize("query", ["", "?allowed_groups=Engineering", "?allowed_roles=viewer"])
async def test_the_auth_yes_is_the_same(both: Callable[..., Any], overrides: dict, query: str):
    client = await both(**overrides)
    session = await sign_in(client)
    headers = [cookie(client, session.id), ("X-Original-URI", "/reports"), ("X-Request-Id", "r1")]
    fast, slow = await answers(client, AUTH + query, headers)
    assert fast.status == 200
    same(fast, slow)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "target", ["/app/page?q=1&x=%20", "/__hop", "/__cookies", "/__redirect?status=302"]
)
async def test_a_forwarded_request_is_the_same_both_ways(
    both: Callable[..., Any], target: str, method: str
):
    """The answer, and (in the echo's body) every header line the upstream received."""
    client = await both(headers={"oauth2_proxy_compat": True})
    session = await sign_in(client)
    headers = [
        cookie(client, session.id),
        ("X-Request-Id", "r2"),
        ("Accept", "text/html"),
        ("X-User", MARK),
        ("x_groups", MARK),
        ("X-Auth-Request-Email", MARK),
        ("X-Forwarded-For", "10.1.2.3"),
        ("X-App", "kept"),
    ]
    fast, slow = await answers(client, target, headers, method)
    same(fast, slow)
    assert MARK.encode() not in fast.body


async def test_a_streamed_download_is_the_same(both: Callable[..., Any]):
    client = await both()
    session = await sign_in(client)
    size = 3 * 1024 * 1024 + 7
    headers = [cookie(client, session.id), ("X-Request-Id", "r4")]
    fast, slow = await answers(client, f"/__download/{size}", headers)
    assert fast.body == b"x" * size
    same(fast, slow)


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
async def test_an_upstream_failure_is_the_same_page(both: Callable[..., Any], accept: str):
    client = await both(upstream={"url": f"http://127.0.0.1:{free_port()}"})
    session = await sign_in(client)
    headers = [cookie(client, session.id), ("Accept", accept), ("X-Request-Id", "r3")]
    fast, slow = await answers(client, "/app", headers)
    assert fast.status == 502
    same(fast, slow)
