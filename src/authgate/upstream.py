"""Forwarding to the protected application over one pooled client session.

Bodies are streamed in both directions in fixed-size chunks, so a 200 MB
upload or download costs a few chunks of memory. The path and query go out
exactly as the client sent them (encoded slashes, `%2e`, `;`), because the
upstream, not authgate, owns their meaning.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from authgate.errors import UpstreamError, UpstreamTimeout
from authgate.headers import HOP_BY_HOP, connection_tokens, normalise
from authgate.metrics import Metrics
from authgate.settings import UpstreamSettings

CHUNK = 64 * 1024
_WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)


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


def _response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    drop = HOP_BY_HOP | connection_tokens(upstream.headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.headers.items():
        if normalise(name) not in drop:
            out.add(name, value)
    return out


class Upstream:
    def __init__(
        self, client: aiohttp.ClientSession, settings: UpstreamSettings, metrics: Metrics
    ) -> None:
        self._client = client
        self._base = settings.url
        self._ws_base = "ws" + settings.url.removeprefix("http")
        self._pass_host = settings.pass_host_header
        self._metrics = metrics

    def _url(self, base: str, request: web.Request) -> URL:
        return URL(base + request.raw_path, encoded=True)

    async def forward(self, request: web.Request, headers: CIMultiDict[str]) -> web.StreamResponse:
        if not self._pass_host:
            headers.popall("Host", None)
        body = request.content if request.body_exists else None
        started = time.perf_counter()
        try:
            upstream = await self._client.request(
                request.method,
                self._url(self._base, request),
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(detail="the application did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(detail=f"cannot reach the application: {exc}") from exc
        self._metrics.upstream_latency.observe(time.perf_counter() - started)
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=_response_headers(upstream)
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError, ConnectionResetError):
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
        return response

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
                self._url(self._ws_base, request),
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
        await client.prepare(request)
        async with upstream:
            await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
        return client


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == aiohttp.WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type == aiohttp.WSMsgType.PONG:
            await sink.pong(msg.data)
    if not sink.closed:
        await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)
