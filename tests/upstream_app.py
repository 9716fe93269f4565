"""A stand-in for the legacy application: it reports exactly what reached it."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web


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


def create_upstream() -> web.Application:
    app = web.Application(client_max_size=0)
    app.router.add_get("/__download/{size}", download)
    app.router.add_get("/__slow", slow)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
