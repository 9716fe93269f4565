"""The upstream HTTP/1.1 client against a raw socket server that answers whatever a test says.

A real application never sends most of these answers; a broken or hostile one
might, and each must end as a clean failure (502/504 upstream), never as a
smuggled request, a mixed-up response or a hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from authgate.upstream_pool import (
    UnsafeHead,
    UpstreamFailure,
    UpstreamPool,
    UpstreamTimedOut,
    header_lines,
    request_head,
)
from tests.servers import free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Fake:
    """A loopback server; `answer(request, n)` is what to write back for the n-th request on
    a connection: bytes, b"" to close without answering, None to stay silent."""

    answer: Callable[[bytes, int], bytes | None]
    close_after: bool = False
    port: int = field(default_factory=free_port)
    connections: int = 0
    received: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        count = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                data = head + await reader.readexactly(length)
                self.received.append(data)
                count += 1
                reply = self.answer(data, count)
                if reply is None:
                    await asyncio.sleep(3600)
                if not reply:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., asyncio.Future[Fake]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Callable[[bytes, int], bytes | None], **kw: bool) -> Fake:
        fake = Fake(answer, **kw)
        servers.append(await asyncio.start_server(fake.handle, "127.0.0.1", fake.port))
        return fake

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def pool(fake: Fake, read_timeout: float = 2.0) -> UpstreamPool:
    return UpstreamPool(
        f"http://127.0.0.1:{fake.port}", connect_timeout=1.0, read_timeout=read_timeout, limit=8
    )


async def fetch(p: UpstreamPool, method: str = "GET", body: bytes | None = None) -> bytes:
    async def chunks() -> AsyncIterator[bytes]:
        yield body or b""

    exchange = await p.send(
        method,
        "/x",
        [("Host", "app")],
        chunks() if body is not None else None,
        len(body) if body is not None else None,
    )
    try:
        return b"".join([chunk async for chunk in exchange.response.chunks()])
    finally:
        exchange.release()


# -- what goes out --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/x", [("X-A", "1\r\nX-Injected: yes")]),
        ("/x", [("X-A", "1\nX-Injected: yes")]),
        ("/x", [("X-A", "1\rX")]),
        ("/x", [("X-A", "nul\x00")]),
        ("/x", [("X-A\r\nX-Injected", "yes")]),
        ("/x HTTP/1.1\r\nHost: evil\r\n\r\nGET /y", []),
    ],
)
def test_a_line_break_anywhere_refuses_the_request(target: str, headers: list[tuple[str, str]]):
    with pytest.raises(UnsafeHead):
        request_head("GET", target, headers, None)


@pytest.mark.parametrize(
    "headers",
    [[("X-A", "1\r\nX-Injected: yes")], [("X-A", "1\nX")], [("X-A", "nul\x00")], [("X\rA", "1")]],
)
def test_prerendered_lines_refuse_a_line_break_too(headers: list[tuple[str, str]]):
    with pytest.raises(UnsafeHead):
        header_lines([("X-Ok", "1"), *headers])


def test_prerendered_lines_go_after_the_headers():
    extra = header_lines([("X-User", "alice")])
    head = request_head("GET", "/x", [("X-A", "1")], None, extra)
    assert head == b"GET /x HTTP/1.1\r\nX-A: 1\r\nX-User: alice\r\n\r\n"


def test_callers_framing_headers_never_go_out():
    head = request_head(
        "POST",
        "/x",
        [("Content-Length", "99"), ("transfer-encoding", "chunked"), ("X-A", "1")],
        "Content-Length: 5",
    )
    assert head == b"POST /x HTTP/1.1\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n"


async def test_kept_alive_connection_is_reused(serve):
    fake = await serve(lambda *_: OK)
    p = pool(fake)
    assert await fetch(p) == b"ok"
    assert await fetch(p) == b"ok"
    assert fake.connections == 1
    await p.close()


# -- what comes back --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        b"not http at all\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    ],
)
async def test_malformed_or_unasked_answers_fail_cleanly(serve, answer: bytes):
    fake = await serve(lambda *_: answer, close_after=True)
    p = pool(fake)
    with pytest.raises(UpstreamFailure):
        await fetch(p)
    await p.close()


async def test_informational_answers_are_skipped(serve):
    fake = await serve(lambda *_: b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    p = pool(fake)
    assert await fetch(p) == b"ok"
    await p.close()


async def test_head_answer_has_no_body_whatever_its_length_says(serve):
    fake = await serve(
        lambda request, _: (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
            + (b"" if request.startswith(b"HEAD") else b"ok")
        )
    )
    p = pool(fake)
    assert await fetch(p, "HEAD") == b""
    assert await fetch(p) == b"ok"
    assert fake.connections == 2, "after a HEAD the connection is not trusted again"
    await p.close()


async def test_body_until_close_when_no_length_is_given(serve):
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
    fake = await serve(lambda *_: answer, close_after=True)
    p = pool(fake)
    assert await fetch(p) == b"until the end"
    await p.close()


async def test_silence_is_a_timeout_and_is_not_retried(serve):
    fake = await serve(lambda *_: None)
    p = pool(fake, read_timeout=0.2)
    with pytest.raises(UpstreamTimedOut):
        await fetch(p)
    assert len(fake.received) == 1
    await p.close()


async def test_refused_connection_is_a_failure():
    p = UpstreamPool(
        f"http://127.0.0.1:{free_port()}", connect_timeout=1.0, read_timeout=1.0, limit=1
    )
    with pytest.raises(UpstreamFailure):
        await fetch(p)


async def test_a_connection_closed_unanswered_is_retried_only_without_a_body(serve):
    """The application closes a kept-alive connection as the next request arrives."""
    fake = await serve(lambda _, n: OK if n == 1 else b"")
    p = pool(fake)
    assert await fetch(p) == b"ok"
    assert await fetch(p) == b"ok", "the GET is sent again on a new connection"
    assert fake.connections == 2
    with pytest.raises(UpstreamFailure):
        await fetch(p, "POST", b"data")
    assert fake.connections == 2, "a body is never sent twice"
    await p.close()


async def test_a_stale_connection_is_not_used_for_a_body(serve):
    """The server closes right after answering: the POST needs a fresh connection anyway."""
    fake = await serve(lambda *_: OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    p = pool(fake)
    assert await fetch(p) == b"ok"
    assert await fetch(p, "POST", b"data") == b"ok"
    assert fake.connections == 2
    await p.close()


async def test_an_answer_nobody_asked_for_retires_the_connection(serve):
    """Two answers to one request: the application is out of step; its connection goes."""
    fake = await serve(lambda _, n: OK + OK if n == 1 else OK)
    p = pool(fake)
    assert await fetch(p) == b"ok"
    assert await fetch(p) == b"ok"
    assert fake.connections == 2
    await p.close()
