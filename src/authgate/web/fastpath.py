"""The hot path without aiohttp's web layer: signed-in page requests and forward-auth.

aiohttp's server spends more CPU per request (request and response objects,
router, middleware chain) than forwarding the request does, and SPEC §11
wants authgate within a small factor of nginx. So every connection starts in
this protocol, which takes a request only when it is plainly one of the two
hot shapes and ordinary in every respect, and answers it with the steps and
functions the aiohttp handlers use: client info, correlation id, session,
policy, header stripping and injection, the upstream exchange.

Everything else hands the connection to aiohttp, with every byte not yet
answered, and aiohttp serves it from there as if it had had it from the
start. So every challenge, refusal and page comes from one implementation;
this module only ever says yes. The only answers it renders itself are the
failures of a request it had taken (store or upstream down), through the
same `error_response`.

When the session is in the cache, neither hot shape needs a task: the
forward-auth answer is written at once, and a page request goes out on an
idle upstream connection whose answer calls back to be relayed (a body too
large to hold is streamed from a task; a timeout is the pool's timer).

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
  the cache, else in the store), has no claims refresh due yet, and for /auth passes
  `allowed_groups` / `allowed_roles`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser
from aiohttp.http_writer import HttpVersion11
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDictProxy, MultiDict, MultiMapping
from yarl import URL

from authgate.errors import AuthgateError
from authgate.session.sessions import Session
from authgate.upstream import failure_reason, response_headers
from authgate.upstream_pool import Exchange, Response, UpstreamFailure, header_lines, http_head
from authgate.web.client_info import ClientInfo, correlation_id_from
from authgate.web.forward_auth import NO_STORE, original_from, permitted
from authgate.web.gate import from_store
from authgate.web.listener import ConnectionHandlers
from authgate.web.middlewares import error_response
from authgate.web.proxy import forward_headers
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
# Sessions whose rendered header lines are kept; more than this and they are made afresh.
RENDERED_SESSIONS = 4096


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


def _query(raw: str) -> MultiMapping[str]:
    """The query as aiohttp's `request.query` reads it."""
    if not raw:
        return MultiDict()
    return URL.build(path="/", query_string=raw, encoded=True).query


class SessionLines:
    """Header lines that follow from the session alone, rendered once per session.

    The identity headers change only when the session does (a touch or a
    refresh makes a new `Session`) or when its signed assertion is renewed,
    so a kept rendering is used only for the very same two objects.
    """

    def __init__(self, st: State, prefix: list[tuple[str, str]]) -> None:
        self._st = st
        self._prefix = prefix
        self._kept: dict[str, tuple[Session, str | None, bytes]] = {}

    def get(self, session: Session) -> bytes:
        signer = self._st.signer
        assertion = signer.sign(session) if signer else None
        kept = self._kept.get(session.id)
        if kept is not None and kept[0] is session and kept[1] is assertion:
            return kept[2]
        lines = header_lines([*self._prefix, *self._st.headers.identity(session, assertion)])
        if len(self._kept) >= RENDERED_SESSIONS:
            self._kept.clear()
        self._kept[session.id] = (session, assertion, lines)
        return lines


Step = Callable[["FrontProtocol", Head], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class InFlight:
    """A request sent upstream without a task; the answer's listener takes it from here."""

    head: Head
    exchange: Exchange
    cid: str
    started: float


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
        self.served = 0
        self.upstream_identity = SessionLines(self.st, [])
        self.allowed = SessionLines(self.st, [*NO_STORE.items()])

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

    def route(self, head: Head) -> Step | None:
        """Which fast step serves this request, if any."""
        if not ordinary(head):
            return None
        if head.path == self._auth_path:
            return FrontProtocol.auth
        if head.method not in _PAGE_METHODS:
            return None
        if head.path.startswith(self._own) or head.path == self.st.settings.prefix:
            return None
        if head.path == self._scim or head.path.startswith(self._scim + "/"):
            return None
        if self.st.public_paths.match(head.target):
            return None
        return FrontProtocol.proxy

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
        self._inflight: InFlight | None = None
        self._closed = False
        self._writing_paused = False
        self._reading_paused = False
        self._drained: asyncio.Future[None] | None = None
        self.idle_since: float | None = None
        self._answered = False

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
        if self._task is None and self._inflight is None:
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
        flight, self._inflight = self._inflight, None
        if flight is not None:
            flight.exchange.release()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    # -- one request after the other ---------------------------------------------------------

    def _next(self) -> None:
        """Answer the request heads in the buffer in turn, or give the connection to aiohttp.

        A forward-auth question whose session is in the cache is answered right
        here, and a page request whose session is in the cache is sent on an
        idle upstream connection right here (its answer's listener goes on);
        everything else runs as a task, and the next head waits for it.
        """
        while self._task is None and self._inflight is None and not self._closed:
            buffer = self._buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > HEAD_LIMIT or not _crlf_only(buffer):
                    self._hand_over()
                return
            scope = bytes(buffer) if end + 4 == len(buffer) else bytes(buffer[: end + 4])
            head = self._reader.read(scope) if len(scope) <= HEAD_LIMIT else None
            step = self._front.route(head) if head is not None else None
            if head is None or step is None:
                self._hand_over()
                return
            answered = self._now(step, head)
            if answered is None:
                self.idle_since = None
                self._task = asyncio.get_running_loop().create_task(
                    self._serve(step(self, head), head)
                )
                return
            if self._inflight is not None:
                return
            self._done(head, answered)

    async def _serve(self, work: Awaitable[bool], head: Head, answered: bool = False) -> None:
        self._answered = answered
        try:
            taken = await work
        except (ConnectionResetError, UpstreamFailure):
            self.close()
            return
        except Exception:
            if self._answered:
                log.exception("fast path failed mid-answer; closing the connection")
                self.close()
                return
            log.exception("fast path failed; aiohttp takes the request over")
            taken = False
        self._task = None
        self._done(head, taken)
        self._next()

    def _now(self, step: Step, head: Head) -> bool | None:
        """Serve the request without a task if it can be; None if it needs one."""
        self._answered = False
        try:
            return self.auth_now(head) if step is FrontProtocol.auth else self.proxy_now(head)
        except Exception:
            if self._answered:
                raise
            log.exception("fast path failed; aiohttp takes the request over")
            return False

    def _done(self, head: Head, taken: bool) -> None:
        """Past one request: drop its bytes, or (not taken) hand everything to aiohttp."""
        if not taken:
            self._hand_over()
            return
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

    # -- the two fast steps ------------------------------------------------------------------

    async def proxy(self, head: Head) -> bool:
        """A signed-in page request: forwarded with the identity, answered with the page."""
        st = self._st
        client, cid = self._client(head)
        try:
            session = await self._session(head)
            if session is None:
                return False
            st.metrics.count("proxy", "forwarded")
            assert st.upstream is not None
            headers = forward_headers(st, head.headers, client, cid, None)
            identity = self._front.upstream_identity.get(session)
            length = 0 if "Content-Length" in head.headers else None
            exchange = await st.upstream.send(
                head.method, head.target, headers, None, length, identity
            )
        except AuthgateError as exc:
            self._write_error(head, cid, exc)
            return True
        try:
            await self._relay(head, exchange.response, cid)
        finally:
            exchange.release()
        return True

    def proxy_now(self, head: Head) -> bool | None:
        """A page request of a cached session, sent on an idle upstream connection at once.

        None when the session is not cached or no upstream connection is idle:
        `proxy` then does the same with waiting.
        """
        session = self._cached(head)
        if session is None or session.refresh_due(time.time()) or "Content-Length" in head.headers:
            return None
        st = self._st
        assert st.upstream is not None
        client, cid = self._client(head)
        headers = forward_headers(st, head.headers, client, cid, None)
        identity = self._front.upstream_identity.get(session)
        started = time.perf_counter()
        try:
            exchange = st.upstream.send_now(
                head.method, head.target, headers, identity, self._upstream_answered
            )
        except AuthgateError as exc:
            self._write_error(head, cid, exc)
            return True
        if exchange is None:
            return None
        st.metrics.count("proxy", "forwarded")
        self.idle_since = None
        self._inflight = InFlight(head, exchange, cid, started)
        return True

    def _upstream_answered(self) -> None:
        """The listener of a request sent by `proxy_now`: relay, stream, retry or report."""
        flight, self._inflight = self._inflight, None
        if flight is None:
            return
        response = flight.exchange.response
        try:
            if self._closed:
                flight.exchange.release()
                return
            if response.error is not None:
                self._upstream_failed(flight, response.error)
                return
            assert self._st.upstream is not None
            self._st.upstream.answered(flight.started)
            if not response.complete:
                self._task = asyncio.get_running_loop().create_task(
                    self._serve(self._stream(flight), flight.head, answered=True)
                )
                return
            try:
                self._relay_whole(flight.head, response, self._answer_headers(response, flight.cid))
            finally:
                flight.exchange.release()
        except Exception:
            log.exception("fast path failed mid-answer; closing the connection")
            self.close()
            return
        self._settled(flight.head)

    def _upstream_failed(self, flight: InFlight, error: BaseException) -> None:
        """A failed answer: sent once more if that is safe, else the 502 or 504 page."""
        flight.exchange.release()
        if flight.exchange.retryable:
            self._task = asyncio.get_running_loop().create_task(
                self._serve(self.proxy(flight.head), flight.head)
            )
            return
        self._write_error(flight.head, flight.cid, failure_reason(error))
        self._settled(flight.head)

    def _settled(self, head: Head) -> None:
        """Past a request answered from a listener; the next head waits for the loop.

        The listener runs inside the upstream connection's parser, which must
        finish before that connection can carry another request.
        """
        self._done(head, True)
        if self._buffer:
            asyncio.get_running_loop().call_soon(self._next)

    async def _stream(self, flight: InFlight) -> bool:
        try:
            await self._relay(flight.head, flight.exchange.response, flight.cid)
        finally:
            flight.exchange.release()
        return True

    def auth_now(self, head: Head) -> bool | None:
        """The forward-auth answer from the session cache alone; None to ask the store."""
        session = self._cached(head)
        if session is None:
            return None
        asked = self._auth_question(head)
        return asked is not None and self._auth_answer(head, *asked, session)

    async def auth(self, head: Head) -> bool:
        """nginx asking whether a request may pass: yes, with the identity headers."""
        asked = self._auth_question(head)
        if asked is None:
            return False
        client, cid = asked
        try:
            session = await self._session(head)
        except AuthgateError as exc:
            self._write_error(head, cid, exc)
            return True
        return self._auth_answer(head, client, cid, session)

    def _auth_question(self, head: Head) -> tuple[ClientInfo, str] | None:
        """Who asks, and the correlation id; None when a trusted proxy names a public path."""
        client, cid = self._client(head)
        original = original_from(client, head.headers, "X-Original-URI", "X-Forwarded-Uri")
        if original and self._st.public_paths.match(original):
            return None
        return client, cid

    def _auth_answer(
        self, head: Head, client: ClientInfo, cid: str, session: Session | None
    ) -> bool:
        """Yes, if this session may pass here; False leaves the answer to aiohttp."""
        if session is None or session.refresh_due(time.time()):
            return False
        if not permitted(_query(head.query), session):
            return False
        self._write(
            b"HTTP/1.1 200 OK\r\n%bX-Request-Id: %b\r\nContent-Length: 0\r\n\r\n"
            % (self._front.allowed.get(session), cid.encode())
        )
        self._st.metrics.count("auth", "allowed")
        return True

    # -- steps shared by both ----------------------------------------------------------------

    def _client(self, head: Head) -> tuple[ClientInfo, str]:
        client = self._st.trusted.describe(self._peer, "http", head.headers["Host"], head.headers)
        return client, correlation_id_from(head.headers, client.via_trusted_proxy)

    def _cached(self, head: Head) -> Session | None:
        """The cookie's session, if the in-process cache has it."""
        sid = session_cookie(head.headers, self._st.cookies.session_name)
        return self._st.sessions.cached(sid) if sid is not None else None

    async def _session(self, head: Head) -> Session | None:
        """A valid session needing no refresh, or None (aiohttp then decides what to say)."""
        sid = session_cookie(head.headers, self._st.cookies.session_name)
        if sid is None:
            return None
        session = self._st.sessions.cached(sid) or await from_store(self._st, sid)
        if session is None or session.refresh_due(time.time()):
            return None
        return session

    @staticmethod
    def _answer_headers(upstream: Response, cid: str) -> list[tuple[str, str]]:
        return [*response_headers(upstream.headers), ("X-Request-Id", cid)]

    def _relay_whole(self, head: Head, upstream: Response, headers: list[tuple[str, str]]) -> bool:
        """The upstream's answer in one write, if it is all here; False if it must be streamed."""
        status, reason = upstream.status, upstream.reason
        if head.method == "HEAD" or status in _NO_BODY:
            self._write(response_head(status, reason, headers, None))
            return True
        if not upstream.complete:
            return False
        sized = [(name, value) for name, value in headers if name.lower() != "content-length"]
        body = upstream.take_body()
        framing = f"Content-Length: {len(body)}"
        self._write(response_head(status, reason, sized, framing) + body)
        return True

    async def _relay(self, head: Head, upstream: Response, cid: str) -> None:
        """The upstream's answer: in one write when complete, else streamed as it comes."""
        headers = self._answer_headers(upstream, cid)
        if self._relay_whole(head, upstream, headers):
            return
        status, reason = upstream.status, upstream.reason
        sized = [(name, value) for name, value in headers if name.lower() != "content-length"]
        chunked = len(sized) == len(headers)
        self._write(
            response_head(
                status, reason, headers, "Transfer-Encoding: chunked" if chunked else None
            )
        )
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
        self._answered = True
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
