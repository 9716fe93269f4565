"""A lean HTTP/1.1 client for the one upstream: pooled keep-alive connections, streamed bodies.

Every proxied request pays for the client that forwards it, and aiohttp's
client is general (cookies, redirects, proxies, many hosts, tracing): it cost
more CPU per request than all of authgate's own checks together. This client
knows one origin and does one thing: write the request head as given, stream
the body with back-pressure, parse the answer with llhttp (httptools), hand
the body over in chunks with back-pressure the other way, and keep the
connection for the next request when HTTP allows. WebSockets still go
through aiohttp (`upstream.py`).

Framing is decided here, never copied: the caller's headers carry no
Content-Length or Transfer-Encoding, and this module adds the one that
matches the body it sends. A head that would carry CR, LF or NUL inside a
line is refused before a byte is written, so nothing can smuggle a second
request to the application.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

# Stop reading from the application while this much body waits for a slow client.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
_FRAMING = frozenset({"content-length", "transfer-encoding"})


class UpstreamFailure(Exception):
    """The application could not be reached or did not answer with a usable response."""


class UpstreamTimedOut(UpstreamFailure):
    pass


class UnsafeHead(ValueError):
    """A header, target or reason phrase that would break out of its line."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the application listens, parsed once from `upstream.url`."""

    host: str
    port: int
    tls: bool
    base_path: str
    host_header: str

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname or ""
        return cls(host, port, tls, parts.path.rstrip("/"), parts.netloc)


class Response:
    """One answer: status line and headers first, then the body in chunks as it arrives."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.keep_alive = False
        self.complete = False
        self.started = False
        self._head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def error(self) -> BaseException | None:
        return self._error

    def take_body(self) -> bytes:
        """Everything received so far (the whole body once `complete`)."""
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        self._conn.resume_reading()
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; each wait for more is limited to the read timeout."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered <= LOW_WATER:
                    self._conn.resume_reading()
                yield chunk
            elif self.complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    async with asyncio.timeout(self._conn.read_timeout):
                        await self._waiter
                except TimeoutError:
                    raise UpstreamTimedOut("the application stopped sending the body") from None
                finally:
                    self._waiter = None

    # -- fed by the connection ------------------------------------------------------------

    def _started(
        self, status: int, reason: str, headers: list[tuple[str, str]], keep: bool
    ) -> None:
        self.status, self.reason, self.headers, self.keep_alive = status, reason, headers, keep
        self.started = True
        if not self._head.done():
            self._head.set_result(None)

    def _feed(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _expire(self) -> None:
        self._fail(UpstreamTimedOut("the application did not answer in time"))

    def _fail(self, error: BaseException) -> None:
        if self.complete:
            return
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; llhttp's callbacks fill the current `Response`."""

    def __init__(self, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.received = False
        self.idle_since = 0.0
        self.response: Response | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reason: list[bytes] = []
        self._headers: list[tuple[str, str]] = []
        self._informational = False
        self._head_only = False
        self._close_delimited = False
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio transport callbacks --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.response is None:
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.response._fail(UpstreamFailure(f"the application's answer is not HTTP: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response, self.response = self.response, None
        if response is not None and response.started and self._close_delimited:
            response._finish()
        elif response is not None:
            response._fail(UpstreamFailure("the application closed the connection mid-answer"))
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(UpstreamFailure("the application closed the connection"))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- llhttp callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.response is None or self.response.complete:
            # An answer nobody asked for: this connection is out of step with us and goes.
            if self.response is not None:
                self.response.keep_alive = False
                self.response = None
            self.close()
            return
        self._reason.clear()
        self._headers = []

    def on_status(self, reason: bytes) -> None:
        self._reason.append(reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._informational = 100 <= status < 200 and status != 101
        if self._informational or self.response is None:
            return
        if status == 101:
            self.response._fail(UpstreamFailure("the application switched protocols unasked"))
            self.response = None
            self.close()
            return
        names = {name.lower() for name, _ in self._headers}
        keep = self._parser.should_keep_alive()
        self._close_delimited = not keep and not names & _FRAMING
        reason = b"".join(self._reason).decode("latin-1")
        self.response._started(status, reason, self._headers, keep and not self._head_only)
        if self._head_only:
            self.response._finish()

    def on_body(self, body: bytes) -> None:
        if self.response is not None and not self._head_only:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.response is not None and not self._head_only:
            self.response._finish()

    # -- used by the pool -------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def begin(self, head: bytes, head_only: bool) -> Response:
        assert self.transport is not None
        response = self.response = Response(self)
        self.received = False
        self._head_only = head_only
        self._close_delimited = False
        try:
            self.transport.write(head)
        except RuntimeError:
            response._fail(UpstreamFailure("the connection to the application was closed"))
            self.close()
        return response

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        if self.closed:
            raise UpstreamFailure("the application closed the connection")
        if not self._writing_paused:
            return
        self._drained = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.read_timeout):
                await self._drained
        except TimeoutError:
            raise UpstreamTimedOut("the application stopped reading the request body") from None
        finally:
            self._drained = None

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def http_head(
    first: str, headers: Sequence[tuple[str, str]], framing: str | None, extra: bytes = b""
) -> bytes:
    """A message head as bytes; refuses a line that a CR, LF or NUL inside would end early.

    Each line gets exactly one CRLF here, so any other CR or LF shows in the counts.
    `extra` is lines made by `header_lines`, already checked.
    """
    lines = [first, *map(": ".join, headers)]
    if framing is not None:
        lines.append(framing)
    text = "\r\n".join(lines) + "\r\n"
    _check_lines(text, len(lines))
    return text.encode("utf-8", "surrogateescape") + extra + b"\r\n"


def header_lines(headers: Sequence[tuple[str, str]]) -> bytes:
    """Header lines, each ending in CRLF, for a head made later (`http_head`'s `extra`)."""
    text = "".join(f"{name}: {value}\r\n" for name, value in headers)
    _check_lines(text, len(headers))
    return text.encode("utf-8", "surrogateescape")


def _check_lines(text: str, lines: int) -> None:
    if text.count("\n") != lines or text.count("\r") != lines or "\x00" in text:
        raise UnsafeHead("a header line or the target contains CR, LF or NUL")


def request_head(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    framing: str | None,
    extra: bytes = b"",
) -> bytes:
    """The request line and headers; no Content-Length or Transfer-Encoding but `framing`."""
    own = [(name, value) for name, value in headers if name.lower() not in _FRAMING]
    return http_head(f"{method} {target} HTTP/1.1", own, framing, extra)


class _Slots:
    """At most `limit` requests in flight, the longest waiting served first."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def take(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()
            else:
                self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        """A slot back: to the longest waiting request, else to the free ones."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class Exchange:
    """A request in flight on one connection; `release` returns it to the pool or closes it."""

    def __init__(self, pool: UpstreamPool, conn: _Connection, response: Response) -> None:
        self.response = response
        self._pool = pool
        self._conn = conn
        self._writer: asyncio.Task[None] | None = None
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        writer = self._writer
        reusable = (
            self.response.complete
            and self.response.keep_alive
            and self._conn.usable
            and (
                writer is None
                or (writer.done() and not writer.cancelled() and writer.exception() is None)
            )
        )
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        self._pool._give_back(self._conn, reusable)


class UpstreamPool:
    """Keep-alive connections to one origin, at most `limit` at a time."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        limit: int,
        keepalive: float = 30.0,
    ) -> None:
        self.origin = Origin.parse(url)
        self.read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._idle: list[_Connection] = []
        self._slots = _Slots(limit)
        self._open: set[_Connection] = set()
        self._tls = ssl.create_default_context() if self.origin.tls else None

    async def send(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterator[bytes] | None,
        length: int | None,
        extra: bytes = b"",
    ) -> Exchange:
        """Send one request; returns once the answer's status and headers are in.

        `length` None with a body means chunked. A request without a body that
        meets a kept-alive connection the application had just closed is sent
        once more on a new connection; one with a body cannot be replayed.
        `extra` is header lines from `header_lines`, sent after `headers`.
        """
        if length is not None:
            framing: str | None = f"Content-Length: {length}"
        elif body is not None:
            framing = "Transfer-Encoding: chunked"
        else:
            framing = None
        head = request_head(method, self.origin.base_path + target, headers, framing, extra)
        chunked = length is None and body is not None
        head_only = method == "HEAD"
        exchange = await self._attempt(head, head_only, body, chunked, fresh=False)
        if exchange is None:
            exchange = await self._attempt(head, head_only, body, chunked, fresh=True)
        assert exchange is not None
        return exchange

    async def _attempt(
        self,
        head: bytes,
        head_only: bool,
        body: AsyncIterator[bytes] | None,
        chunked: bool,
        fresh: bool,
    ) -> Exchange | None:
        """One try; None when a reused connection turned out closed and a retry is safe."""
        await self._slots.take()
        try:
            conn = await self._connection(fresh)
        except BaseException:
            self._slots.give()
            raise
        response = conn.begin(head, head_only)
        exchange = Exchange(self, conn, response)
        if body is not None:
            exchange._writer = asyncio.create_task(self._write_body(conn, body, chunked))
        try:
            await self._headers(exchange, response)
        except UpstreamTimedOut:
            exchange.release()
            raise
        except UpstreamFailure:
            exchange.release()
            if conn.reused and not conn.received and body is None and not fresh:
                return None
            raise
        except BaseException:
            exchange.release()
            raise
        return exchange

    async def _headers(self, exchange: Exchange, response: Response) -> None:
        """Wait for the status line and headers, counting time only once the body is sent."""
        writer = exchange._writer
        if writer is not None:
            done, _ = await asyncio.wait({writer, response._head}, return_when="FIRST_COMPLETED")
            if writer in done and writer.exception() is not None:
                raise writer.exception()  # type: ignore[misc]
        timer = asyncio.get_running_loop().call_later(self.read_timeout, response._expire)
        try:
            await response._head
        finally:
            timer.cancel()

    @staticmethod
    async def _write_body(conn: _Connection, body: AsyncIterator[bytes], chunked: bool) -> None:
        async for chunk in body:
            if not chunk:
                continue
            if chunked:
                conn.write(b"%x\r\n" % len(chunk))
                conn.write(chunk)
                conn.write(b"\r\n")
            else:
                conn.write(chunk)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable and now - conn.idle_since < self._keepalive:
                conn.reused = True
                return conn
            conn.close()
            self._open.discard(conn)
        return None

    async def _connection(self, fresh: bool) -> _Connection:
        conn = None if fresh else self._idle_connection()
        if conn is not None:
            return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, conn = await loop.create_connection(
                    lambda: _Connection(self.read_timeout),
                    self.origin.host,
                    self.origin.port,
                    ssl=self._tls,
                    server_hostname=self.origin.host if self._tls else None,
                )
        except TimeoutError:
            raise UpstreamTimedOut("the application did not accept a connection in time") from None
        except OSError as exc:
            raise UpstreamFailure(f"cannot connect to the application: {exc}") from exc
        # uvloop may call connection_made only after create_connection has returned.
        conn.connection_made(transport)
        self._open.add(conn)
        return conn

    def _give_back(self, conn: _Connection, reusable: bool) -> None:
        self._slots.give()
        if reusable:
            conn.response = None
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
            self._open.discard(conn)

    async def close(self) -> None:
        for conn in self._open:
            conn.close()
        self._open.clear()
        self._idle.clear()
