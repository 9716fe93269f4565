"""A stand-in for the legacy application: it reports exactly what reached it."""

from __future__ import annotations

import asyncio
import gzip
import json

from aiohttp import WSMsgType, web

WS_CLOSES: web.AppKey[list[int]] = web.AppKey("ws_closes", list)
GZIP_BODY = gzip.compress(b'{"compressed": true}' * 64, mtime=0)


async def echo(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_bytes": size,
        },
        headers={"X-Upstream": "echo", "Connection": "keep-alive, X-Hop", "X-Hop": "secret"},
    )


async def download(request: web.Request) -> web.StreamResponse:
    total = int(request.match_info["size"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = total
    await response.prepare(request)
    block = b"x" * 65536
    sent = 0
    while sent < total:
        piece = block[: min(len(block), total - sent)]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.Response(text="late")


async def mirror(request: web.Request) -> web.StreamResponse:
    """Stream the request body straight back, so both directions can be compared byte for byte."""
    response = web.StreamResponse(
        status=int(request.query.get("status", "200")),
        headers={"X-Method": request.method, "Content-Type": "application/octet-stream"},
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    async for chunk in request.content.iter_chunked(65536):
        if request.method != "HEAD":
            await response.write(chunk)
    await response.write_eof()
    return response


async def redirect(request: web.Request) -> web.Response:
    status = int(request.query.get("status", "302"))
    return web.Response(status=status, headers={"Location": "/elsewhere?from=upstream"})


async def cookies(request: web.Request) -> web.Response:
    response = web.Response(text="cookies")
    response.headers.add("Set-Cookie", "app_session=abc123; Path=/; HttpOnly")
    response.headers.add("Set-Cookie", "theme=dark; Path=/; Max-Age=3600")
    return response


async def gzipped(request: web.Request) -> web.Response:
    """Already-compressed bytes with their Content-Encoding, as a CDN-fronted app would send."""
    return web.Response(
        body=GZIP_BODY,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )


async def hop_by_hop(request: web.Request) -> web.StreamResponse:
    """Every hop-by-hop response header at once, framed with chunked transfer-encoding."""
    response = web.StreamResponse(
        headers={
            "Connection": "keep-alive, X-Hop-Named",
            "Keep-Alive": "timeout=5, max=100",
            "Proxy-Authenticate": 'Basic realm="upstream"',
            "Proxy-Connection": "keep-alive",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "Upgrade": "h2c",
            "X-Hop-Named": "must-not-pass",
            "X-End-To-End": "kept",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b"hop-by-hop body")
    await response.write_eof()
    return response


async def ws_probe(request: web.Request) -> web.StreamResponse:
    """Report the upgrade request, echo, close on demand and record how the client closed."""
    ws = web.WebSocketResponse(protocols=("chat", "superchat"))
    await ws.prepare(request)
    await ws.send_str(
        json.dumps(
            {
                "raw_path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "protocol": ws.ws_protocol,
            }
        )
    )
    async for msg in ws:
        if msg.type == WSMsgType.TEXT and msg.data.startswith("close:"):
            await ws.close(code=int(msg.data.removeprefix("close:")), message=b"upstream bye")
        elif msg.type == WSMsgType.TEXT:
            await ws.send_str("echo:" + msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    if ws.close_code is not None:
        request.app[WS_CLOSES].append(ws.close_code)
    return ws


async def ws_closes(request: web.Request) -> web.Response:
    return web.json_response(request.app[WS_CLOSES])


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, text=f"status {code}", headers={"X-Upstream-Status": "yes"})


def create_upstream() -> web.Application:
    app = web.Application(client_max_size=0)
    app[WS_CLOSES] = []
    app.router.add_get("/__download/{size}", download)
    app.router.add_get("/__slow", slow)
    app.router.add_route("*", "/__mirror", mirror)
    app.router.add_get("/__redirect", redirect)
    app.router.add_get("/__cookies", cookies)
    app.router.add_get("/__gzip", gzipped)
    app.router.add_get("/__hop", hop_by_hop)
    app.router.add_get("/__ws/probe", ws_probe)
    app.router.add_get("/__ws/closes", ws_closes)
    app.router.add_route("*", "/__status/{code}", status)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
