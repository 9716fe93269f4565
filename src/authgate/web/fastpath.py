"""The hot path without aiohttp's web layer: a codec around `decision.decide`.

aiohttp's server spends more CPU per request (request and response objects,
router, middleware chain) than forwarding the request does, and SPEC §11
wants authgate within a small factor of nginx. So every connection starts in
this protocol, which parses a request head into `decision.Facts`, finds the
session, calls the same `decide` aiohttp's handlers call, and writes the
`Decision` out: the /auth yes, or the request forwarded with the identity
and the application's answer relayed. It decides nothing itself.

Everything else hands the connection to aiohttp, with every byte not yet
answered, and aiohttp serves it from there as if it had had it from the
start: a request that is not plainly ordinary, one without a usable session
cookie, a public path, a session due for its refresh, and every decision
other than those two (challenges, refusals, redirects), so every page comes
from one implementation. The only answers rendered here besides those are
the failures of a request it had taken (store or upstream down), through the
same `error_response`. An unexpected error closes the connection.

A /auth question whose session is in the cache is answered at once, without
a task; every other request taken runs as one task, and the next pipelined
head waits for it.

A request is taken only if all of these hold:
- aiohttp's own parser reads its head as one complete HTTP/1.1 message
  without a body, with a Host header and no header name twice;
- no Upgrade, Expect or Transfer-Encoding; Content-Length, if any, 0;
  Connection, if any, keep-alive;
- a plain target: only unreserved and sub-delim characters in the path (no
  %-escapes, dot segments or double slashes), no fragment;
- it is `{prefix}/auth`, or a GET or HEAD of a path outside `{prefix}/` that
  is not public;
- it carries exactly one unquoted session cookie whose session is valid (in
  the cache, else in the store) and has no claims refresh due yet;
- the decision is the /auth yes or a forward with the identity.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser
from aiohttp.http_writer import HttpVersion11
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDictProxy, MultiMapping

from authgate.errors import AuthgateError
from authgate.session.sessions import Session
from authgate.upstream import response_headers
from authgate.upstream_pool import Response, UpstreamFailure, header_lines, http_head
from authgate.web.client_info import correlation_id_from
from authgate.web.decision import Action, Decision, Endpoint, Facts, decide, facts
from authgate.web.gate import lookup
from authgate.web.listener import ConnectionHandlers
from authgate.web.middlewares import error_response
from authgate.web.proxy import upstream_headers
from authgate.web.state import STATE, State

log = logging.getLogger("authgate")

# A longer head goes to aiohttp, whose limits then apply (8190 bytes is its longest line).
HEAD_LIMIT = 8190
MAX_HEADERS = 128
# Stop reading from a client that pipelines more than this while a request is in progress.
READ_AHEAD = 64 * 1024
# A connection with no request in progress for this long is closed (aiohttp's default).
KEEPALIVE = 75.0
SWEEP_EVERY = 5.0
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_DOT_SEGMENT = re.compile(r"//|/\.\.?(?:/|$)")
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_NOT_ORDINARY = frozenset({"upgrade", "expect", "transfer-encoding"})
_PAGE_METHODS = frozenset({"GET", "HEAD"})
_NO_BODY = frozenset({204, 304})
# Rendered lines of a decision's fixed headers; only module constants ever get here.
_RENDERED_HEADERS = 64


@dataclass(frozen=True, slots=True)
class Head:
    """One request head, as aiohttp's parser read it."""

    method: str
    target: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    size: int


class _HeadReader:
    """aiohttp's own request parser (llhttp, in C): a head reads here exactly as in aiohttp.

    It is fed one complete head at a time and keeps it only if that was one
    whole message without a body; anything else ends the fast path for the
    connection, and the parser with it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._parser = HttpRequestParser(
            BaseProtocol(loop),
            loop,
            HEAD_LIMIT,
            max_line_size=HEAD_LIMIT,
            max_field_size=HEAD_LIMIT,
            max_headers=MAX_HEADERS,
        )

    def read(self, data: bytes) -> Head | None:
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError:
            return None
        if len(messages) != 1 or upgraded or tail:
            return None
        message, payload = messages[0]
        if payload is not EMPTY_PAYLOAD or message.version != HttpVersion11:
            return None
        if message.upgrade or message.chunked or message.should_close:
            return None
        target = message.path
        path, _, query = target.partition("?")
        return Head(message.method, target, path, query, message.headers, len(data))


def ordinary(head: Head) -> bool:
    """Nothing about the request that the fast path would have to think about."""
    headers = head.headers
    names = {name.lower() for name in headers}
    if len(names) != len(headers) or "host" not in names or names & _NOT_ORDINARY:
        return False
    if headers.get("Content-Length", "0") != "0":
        return False
    if headers.get("Connection", "keep-alive").lower() != "keep-alive":
        return False
    return bool(
        _PLAIN_PATH.fullmatch(head.path)
        and not _DOT_SEGMENT.search(head.path)
        and _PLAIN_QUERY.fullmatch(head.query)
    )


def _crlf_only(data: bytes | bytearray) -> bool:
    """Lines end in CRLF only; a bare CR or LF hands over before the head is even complete."""
    pairs = data.count(b"\r\n")
    return data.count(b"\n") == pairs and data.count(b"\r") == pairs


def session_cookie(headers: MultiMapping[str], name: str) -> str | None:
    """The one session id in the Cookie header; None if absent, repeated or at all unusual."""
    raw = headers.get("Cookie")
    if raw is None or '"' in raw:
        return None
    found = [
        value.strip()
        for part in raw.split(";")
        for key, _, value in [part.partition("=")]
        if key.strip() == name
    ]
    if len(found) != 1 or not _SESSION_ID.fullmatch(found[0]):
        return None
    return found[0]


def response_head(
    status: int, reason: str, headers: list[tuple[str, str]], framing: str | None
) -> bytes:
    return http_head(f"HTTP/1.1 {status} {reason}", headers, framing)


class Front:
    """The protocol factory for the main listener; knows where to hand connections over."""

    def __init__(self, app: web.Application, handover: ConnectionHandlers) -> None:
        self.st: State = app[STATE]
        self.handover = handover
        self.connections: set[FrontProtocol] = set()
        self._auth_path = self.st.url("/auth")
        self._own = self.st.settings.prefix + "/"
        self._scim = self.st.settings.scim_path
        self._sweeper: asyncio.Task[None] | None = None
        self._lines: dict[tuple[tuple[str, str], ...], bytes] = {}
        self.served = 0

    def __call__(self) -> FrontProtocol:
        return FrontProtocol(self)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close idle connections now and then, instead of a timer per request."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            stale = loop.time() - KEEPALIVE
            for conn in list(self.connections):
                if conn.idle_since is not None and conn.idle_since < stale:
                    conn.close()

    def route(self, head: Head) -> Endpoint | None:
        """Which question an ordinary request asks, if the fast path may take it."""
        if not ordinary(head):
            return None
        if head.path == self._auth_path:
            return Endpoint.AUTH
        if head.method not in _PAGE_METHODS:
            return None
        if head.path.startswith(self._own) or head.path == self.st.settings.prefix:
            return None
        if head.path == self._scim or head.path.startswith(self._scim + "/"):
            return None
        if self.st.connections.owns(head.path):
            return None
        return Endpoint.PROXY

    def lines(self, headers: tuple[tuple[str, str], ...]) -> bytes:
        """A decision's fixed headers as lines, rendered once per distinct set."""
        rendered = self._lines.get(headers)
        if rendered is None:
            if len(self._lines) >= _RENDERED_HEADERS:
                self._lines.clear()
            rendered = self._lines[headers] = header_lines(headers)
        return rendered

    def close_all(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.close()


class FrontProtocol(asyncio.Protocol):
    """One client connection: serve the ordinary requests, hand the rest to aiohttp."""

    def __init__(self, front: Front) -> None:
        self._front = front
        self._st = front.st
        self._reader = _HeadReader(asyncio.get_running_loop())
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._writing_paused = False
        self._reading_paused = False
        self._drained: asyncio.Future[None] | None = None
        self.idle_since: float | None = None

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if peer else ""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._front.connections.add(self)
        self.idle_since = asyncio.get_running_loop().time()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None:
            self._next()
        elif len(self._buffer) > READ_AHEAD and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._front.connections.discard(self)
        if self._task is not None:
            self._task.cancel()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    # -- one request after the other ---------------------------------------------------------

    def _next(self) -> None:
        """Take the request heads in the buffer in turn, or give the connection to aiohttp."""
        while self._task is None and not self._closed:
            head = self._complete_head()
            if head is None:
                return
            sid = session_cookie(head.headers, self._st.cookies.session_name)
            request = self._facts(head) if sid is not None else None
            if request is None or sid is None:
                self._hand_over()
                return
            session = self._st.sessions.cached(sid)
            if session is None or request.endpoint is Endpoint.PROXY:
                self.idle_since = None
                self._task = asyncio.get_running_loop().create_task(
                    self._serve(head, request, sid, session)
                )
                return
            if not self._answer(request, session):
                self._hand_over()
                return
            self._done(head)

    def _complete_head(self) -> Head | None:
        """The next whole request head; None to wait for more bytes, or once handed over."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > HEAD_LIMIT or not _crlf_only(buffer):
                self._hand_over()
            return None
        scope = bytes(buffer) if end + 4 == len(buffer) else bytes(buffer[: end + 4])
        head = self._reader.read(scope) if len(scope) <= HEAD_LIMIT else None
        if head is None:
            self._hand_over()
        return head

    def _facts(self, head: Head) -> Facts | None:
        """The request's facts, or None for one the fast path leaves to aiohttp."""
        endpoint = self._front.route(head)
        if endpoint is None:
            return None
        headers = head.headers
        client = self._st.trusted.describe(self._peer, "http", headers["Host"], headers)
        cid = correlation_id_from(headers, client.via_trusted_proxy)
        request = facts(self._st, endpoint, head.method, head.target, headers, client, cid)
        return None if request.public else request

    async def _serve(self, head: Head, request: Facts, sid: str, session: Session | None) -> None:
        try:
            taken = await self._take(head, request, sid, session)
        except (ConnectionResetError, UpstreamFailure):
            self.close()
            return
        except Exception:
            log.exception("fast path failed (correlation id %s); connection closed", request.cid)
            self.close()
            return
        self._task = None
        if not taken:
            self._hand_over()
            return
        self._done(head)
        self._next()

    def _done(self, head: Head) -> None:
        """Past one request: drop its bytes and wait for the next."""
        del self._buffer[: head.size]
        self._front.served += 1
        self.idle_since = asyncio.get_running_loop().time()
        self._resume_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    def _hand_over(self) -> None:
        """aiohttp serves this connection from now on, starting with the unanswered bytes."""
        if self._closed or self._transport is None:
            return
        self._front.connections.discard(self)
        self._resume_reading()
        self._closed = True
        handler = self._front.handover()
        self._transport.set_protocol(handler)
        handler.connection_made(self._transport)
        if self._buffer:
            handler.data_received(bytes(self._buffer))
        self._buffer.clear()

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()
        self._closed = True

    # -- the decision, served ----------------------------------------------------------------

    def _decided(self, request: Facts, session: Session) -> Decision | None:
        """The decision if the fast path serialises it; None leaves the request to aiohttp."""
        if session.refresh_due(time.time()):
            return None
        decision = decide(self._st, request, session)
        if decision.action is Action.FORWARD or (
            decision.action is Action.ANSWER and decision.status == 200
        ):
            self._st.metrics.count(request.endpoint.value, decision.reason)
            return decision
        return None

    def _answer(self, request: Facts, session: Session) -> bool:
        """A /auth question of a cached session, answered at once; False for aiohttp to."""
        decision = self._decided(request, session)
        if decision is None:
            return False
        self._write_answer(decision, request.cid)
        return True

    async def _take(self, head: Head, request: Facts, sid: str, session: Session | None) -> bool:
        """The request served from its decision; False leaves it to aiohttp."""
        st = self._st
        try:
            if session is None:
                session = await lookup(st, sid)
            decision = self._decided(request, session) if session is not None else None
            if decision is None:
                return False
            if decision.action is Action.ANSWER:
                self._write_answer(decision, request.cid)
                return True
            assert st.upstream is not None
            identity = decision.identity.lines if decision.identity is not None else b""
            length = 0 if "Content-Length" in head.headers else None
            headers = upstream_headers(st, head.headers, decision)
            exchange = await st.upstream.send(
                head.method, head.target, headers, None, length, identity
            )
        except AuthgateError as exc:
            self._write_error(head, request.cid, exc)
            return True
        try:
            await self._relay(head, exchange.response, request.cid)
        finally:
            exchange.release()
        return True

    def _write_answer(self, decision: Decision, cid: str) -> None:
        """A 200 decided here (the /auth yes): its headers, the identity, the request id."""
        assert decision.status == 200
        identity = decision.identity.lines if decision.identity is not None else b""
        self._write(
            b"HTTP/1.1 200 OK\r\n%b%bX-Request-Id: %b\r\nContent-Length: 0\r\n\r\n"
            % (self._front.lines(decision.headers), identity, cid.encode())
        )

    async def _relay(self, head: Head, upstream: Response, cid: str) -> None:
        """The upstream's answer: in one write when complete, else streamed as it comes."""
        headers = response_headers(upstream.headers, cid)
        status, reason = upstream.status, upstream.reason
        if head.method == "HEAD" or status in _NO_BODY:
            self._write(response_head(status, reason, headers, None))
            return
        sized = [(name, value) for name, value in headers if name.lower() != "content-length"]
        if upstream.complete:
            body = upstream.take_body()
            framing = f"Content-Length: {len(body)}"
            self._write(response_head(status, reason, sized, framing) + body)
            return
        chunked = len(sized) == len(headers)
        framing = "Transfer-Encoding: chunked" if chunked else None
        self._write(response_head(status, reason, headers, framing))
        async for chunk in upstream.chunks():
            self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await self._drain()
        if chunked:
            self._write(b"0\r\n\r\n")

    def _write_error(self, head: Head, cid: str, exc: AuthgateError) -> None:
        """The same page or JSON aiohttp's error middleware renders, written out here."""
        response = error_response(self._st, head.headers, cid, exc)
        body = response.body if isinstance(response.body, bytes) else b""
        headers = [(n, v) for n, v in response.headers.items() if n.lower() != "content-length"]
        framing = f"Content-Length: {len(body)}"
        self._write(response_head(response.status, response.reason, headers, framing) + body)

    # -- writing -----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._closed or self._transport is None:
            raise ConnectionResetError("the client went away")
        self._transport.write(data)

    async def _drain(self) -> None:
        if self._closed:
            raise ConnectionResetError("the client went away")
        if not self._writing_paused:
            return
        self._drained = asyncio.get_running_loop().create_future()
        try:
            await self._drained
        finally:
            self._drained = None
        if self._closed:
            raise ConnectionResetError("the client went away")

    def _wake_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
