"""Forwarding to the protected application: HTTP over `upstream_pool`, WebSockets over aiohttp.

Bodies are streamed in both directions in fixed-size chunks, so a 200 MB
upload or download costs a few chunks of memory; an answer that is already
complete when its headers arrive (the usual small page) goes back in one
write. The path and query go out exactly as the client sent them (encoded
slashes, `%2e`, `;`, an empty `?`), because the upstream, not authgate, owns
their meaning.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from authgate.errors import AuthgateError, BadRequest, UpstreamError, UpstreamTimeout
from authgate.headers import HOP_BY_HOP, normalise
from authgate.metrics import Metrics
from authgate.settings import UpstreamSettings
from authgate.upstream_pool import (
    Exchange,
    Response,
    UnsafeHead,
    UpstreamFailure,
    UpstreamPool,
    UpstreamTimedOut,
)

CHUNK = 64 * 1024
_WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)

_REQUEST_ID = "x-request-id"

# Close codes a peer may report but must never put in a close frame (RFC 6455 §7.4.1).
_UNSENDABLE_CLOSE = frozenset({1004, 1005, 1006, 1015})


def origin_form(raw_path: str) -> str:
    """The request target exactly as received, if it can only be read one way.

    The public-path check reads the raw target, and the upstream receives it;
    a fragment (`/admin#/../public/`) or an absolute-form target would be cut
    or re-parsed on the way out, so the upstream could get a different path
    from the one that was checked. Such targets are refused, never repaired.
    """
    if not raw_path.startswith("/") or "#" in raw_path:
        raise BadRequest(detail="the request target must be a path (origin-form) without '#'")
    return raw_path


def upstream_url(base: str, raw_path: str) -> URL:
    """The upstream URL for a raw target; yarl may only drop an empty query (`/a?` -> `/a`)."""
    url = URL(base + origin_form(raw_path), encoded=True)
    if url.raw_path_qs not in (raw_path, raw_path.removesuffix("?")):
        raise BadRequest(detail="the request target would not reach the application unchanged")
    return url


def create_client(settings: UpstreamSettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.max_connections,
        limit_per_host=settings.max_connections,
        keepalive_timeout=30,
        enable_cleanup_closed=True,
    )
    timeout = aiohttp.ClientTimeout(
        total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
    )


def failure_reason(exc: BaseException) -> AuthgateError:
    """What the client is told when the exchange with the application failed."""
    if isinstance(exc, UpstreamTimedOut):
        return UpstreamTimeout(detail=str(exc))
    if isinstance(exc, UnsafeHead):
        return BadRequest(detail=str(exc))
    return UpstreamError(detail=str(exc))


def response_headers(received: list[tuple[str, str]], cid: str) -> list[tuple[str, str]]:
    """The upstream's header lines for the client, and authgate's request id.

    No hop-by-hop lines, nor those the upstream named so; its own `X-Request-Id`
    gives way to the one authgate logged, on every answer either front relays.
    """
    named = {
        normalise(token)
        for name, value in received
        if normalise(name) == "connection"
        for token in value.split(",")
        if token.strip()
    }
    kept = [
        (name, value)
        for name, value in received
        if (key := normalise(name)) not in HOP_BY_HOP and key not in named and key != _REQUEST_ID
    ]
    kept.append(("X-Request-Id", cid))
    return kept


def _client_gone(request: web.Request) -> None:
    """Cut the client's connection: a truncated answer must not look complete."""
    if request.transport is not None:
        request.transport.close()


class Upstream:
    def __init__(
        self, client: aiohttp.ClientSession, settings: UpstreamSettings, metrics: Metrics
    ) -> None:
        self._client = client
        self._pool = UpstreamPool(
            settings.url,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            limit=settings.max_connections,
        )
        self._ws_base = "ws" + settings.url.removeprefix("http")
        self._pass_host = settings.pass_host_header
        self._metrics = metrics

    async def close(self) -> None:
        await self._pool.close()

    async def forward(
        self, request: web.Request, headers: list[tuple[str, str]], cid: str, extra: bytes = b""
    ) -> web.StreamResponse:
        """aiohttp's request upstream and the answer back; `extra` as in `send`."""
        body = request.content.iter_chunked(CHUNK) if request.body_exists else None
        exchange = await self.send(
            request.method, request.raw_path, headers, body, request.content_length, extra
        )
        try:
            return await _respond(request, exchange.response, cid)
        finally:
            exchange.release()

    async def send(
        self,
        method: str,
        raw_path: str,
        headers: list[tuple[str, str]],
        body: AsyncIterator[bytes] | None,
        length: int | None,
        extra: bytes = b"",
    ) -> Exchange:
        """Send the request; returns with the answer's status and headers, its body to come.

        The caller streams the answer and must `release()` the exchange. `extra`
        is identity lines rendered by `upstream_pool.header_lines`.
        """
        if not self._pass_host:
            headers = [(name, value) for name, value in headers if name.lower() != "host"]
        started = time.perf_counter()
        try:
            exchange = await self._pool.send(
                method, origin_form(raw_path), headers, body, length, extra
            )
        except (UpstreamFailure, UnsafeHead) as exc:
            raise failure_reason(exc) from exc
        self.answered(started)
        return exchange

    def answered(self, started: float) -> None:
        """The application answered a request sent at `started` (`time.perf_counter`)."""
        self._metrics.upstream_latency.observe(time.perf_counter() - started)

    async def websocket(
        self, request: web.Request, headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        """Relay a websocket; upstream goes first so a refusal is a 502, not a dead socket."""
        protocols = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        for name in list(headers):
            if normalise(name) in _WS_HANDSHAKE:
                headers.popall(name, None)
        if not self._pass_host:
            headers.popall("Host", None)
        try:
            upstream = await self._client.ws_connect(
                upstream_url(self._ws_base, request.raw_path),
                headers=headers,
                protocols=protocols,
                autoping=False,
                max_msg_size=0,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(detail="the application did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(detail=f"cannot open the websocket upstream: {exc}") from exc
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (),
            autoping=False,
            max_msg_size=0,
        )
        async with upstream:
            await client.prepare(request)
            try:
                await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
            except asyncio.CancelledError:
                # The client's connection dropped and aiohttp cancelled this handler
                # (handler_cancellation, shutdown) mid-close: finish the close upstream
                # with the client's code rather than the context manager's 1000.
                if not upstream.closed:
                    await upstream.close(code=_close_code(client))
                raise
        return client


async def _respond(request: web.Request, upstream: Response, cid: str) -> web.StreamResponse:
    """The upstream's answer to the client: in one write when complete, else streamed."""
    headers = CIMultiDict(response_headers(upstream.headers, cid))
    if upstream.complete and request.method != "HEAD":
        body = upstream.take_body()
        if body:
            return web.Response(
                status=upstream.status, reason=upstream.reason, headers=headers, body=body
            )
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    try:
        await response.prepare(request)
        async for chunk in upstream.chunks():
            await response.write(chunk)
        await response.write_eof()
    except (UpstreamFailure, ConnectionResetError):
        _client_gone(request)
    return response


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def _close_code(source: WebSocket) -> int:
    """The code to pass on, or the nearest one a close frame may legally carry."""
    code = source.close_code
    if code is None or code in _UNSENDABLE_CLOSE:
        return aiohttp.WSCloseCode.OK if code in (None, 1005) else aiohttp.WSCloseCode.GOING_AWAY
    return code


async def _pump(source: WebSocket, sink: WebSocket) -> None:
    """Copy frames one way; when `source` ends, `sink` is closed with the same code.

    A send that fails because the other side vanished ends the pump quietly:
    the other pump sees the same socket close and finishes too.
    """
    try:
        async for msg in source:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                await sink.ping(msg.data)
            elif msg.type == aiohttp.WSMsgType.PONG:
                await sink.pong(msg.data)
    except (ConnectionResetError, aiohttp.ClientError):
        pass
    if not sink.closed:
        await sink.close(code=_close_code(source))
