"""A capped read holds its cap however the body arrives: in one piece or trickled."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.bodies import read_capped


async def _trickled(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(int(request.query["parts"])):
        await response.write(b"x" * 1000)
        await asyncio.sleep(0.005)
    await response.write_eof()
    return response


async def _read(parts: int, limit: int) -> bytes:
    app = web.Application()
    app.router.add_get("/", _trickled)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/", params={"parts": str(parts)})
        return await read_capped(resp.content, limit)


async def test_a_trickled_body_is_read_to_its_end():
    assert len(await _read(parts=20, limit=50_000)) == 20_000


async def test_a_trickled_body_over_the_limit_reads_one_byte_past_it():
    assert len(await _read(parts=20, limit=5_000)) == 5_001


async def test_a_body_of_exactly_the_limit_is_not_over_it():
    assert len(await _read(parts=5, limit=5_000)) == 5_000
