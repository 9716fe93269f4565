"""Request heads aiohttp's parser refuses: our answer, never a byte of the request.

aiohttp's default 400 quotes the offending line. With padding cookies a script
on the app's origin makes that line start with the HttpOnly session cookie, so
every answer here is checked for the session id and for the padding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry

from authgate.app import create_app, front_site, metrics_app, site
from authgate.session.memory import MemoryStore
from authgate.settings import Settings
from authgate.web.state import STATE
from tests.integration.test_fast_path import new_session
from tests.rawhttp import Raw, read_response
from tests.servers import free_port

PAD = "p" * 9000
LIBRARY_WORDS = (b"Got more than", b"Bad Request", b"Invalid", b"bytes when reading")


@contextlib.asynccontextmanager
async def listening(settings: Settings) -> AsyncIterator[tuple[int, str]]:
    """The main listener on a free port, and the `Cookie` value of a live session."""
    app = create_app(settings, MemoryStore())
    port = free_port()
    async with front_site(app, f"127.0.0.1:{port}", False):
        session = await new_session(app[STATE])
        yield port, f"{app[STATE].cookies.session_name}={session.id}"


async def send(port: int, head: str) -> Raw:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1"))
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


def heads(session: str) -> dict[str, str]:
    """Heads that aiohttp's parser refuses, each built to make it quote the session cookie."""
    session_id = session.partition("=")[2]
    cookie = f"Cookie: {session}; pad={PAD}"
    return {
        "cookie-line-too-long": f"GET /app HTTP/1.1\r\nHost: x\r\n{cookie}\r\n\r\n",
        "target-too-long": f"GET /app?{session_id}{PAD} HTTP/1.1\r\nHost: x\r\n\r\n",
        "bad-header-name": f"GET /app HTTP/1.1\r\nHost: x\r\nX {session_id}: y\r\n\r\n",
        "bad-method": f"G{session_id}( /app HTTP/1.1\r\nHost: x\r\n\r\n",
    }


EXPECTED = {
    "cookie-line-too-long": (431, b"header_too_large"),
    "target-too-long": (431, b"header_too_large"),
    "bad-header-name": (400, b"invalid_request"),
    "bad-method": (400, b"invalid_request"),
}


def assert_quiet(resp: Raw, session: str, status: int, reason: bytes) -> None:
    session_id = session.partition("=")[2]
    assert resp.status == status
    assert reason in resp.body
    assert session_id.encode() not in resp.body
    assert b"ppppp" not in resp.body
    assert not any(word in resp.body for word in LIBRARY_WORDS), resp.body
    assert resp.headers["X-Request-Id"].encode() in resp.body
    assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("case", sorted(EXPECTED))
async def test_an_unreadable_head_is_answered_without_echo(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture, case: str
):
    caplog.set_level(logging.DEBUG)
    async with listening(settings_factory()) as (port, session):
        resp = await send(port, heads(session)[case])
    status, reason = EXPECTED[case]
    assert_quiet(resp, session, status, reason)
    assert resp.headers["Content-Type"].startswith("text/html")
    assert session.partition("=")[2] not in caplog.text
    assert PAD[:100] not in caplog.text


async def test_a_connection_the_fast_path_served_is_answered_without_echo(
    settings_factory: Callable[..., Settings],
):
    async with listening(settings_factory()) as (port, session):
        page = f"GET /app HTTP/1.1\r\nHost: x\r\nCookie: {session}\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(page.encode("latin-1"))
            first = await read_response(reader)
            writer.write(heads(session)["cookie-line-too-long"].encode("latin-1"))
            second = await read_response(reader)
        finally:
            writer.close()
    assert first.status == 200
    assert_quiet(second, session, 431, b"header_too_large")


async def test_the_metrics_listener_does_not_echo_either():
    port = free_port()
    session = "authgate=" + "s" * 43
    async with site(metrics_app(CollectorRegistry()), f"127.0.0.1:{port}"):
        resp = await send(port, heads(session)["cookie-line-too-long"])
    assert_quiet(resp, session, 431, b"header_too_large")
    assert resp.headers["Content-Type"].startswith("text/plain")
