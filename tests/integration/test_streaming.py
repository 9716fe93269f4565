"""Bounded memory while streaming: 200 MB up and 200 MB down through a real authgate process.

authgate runs as `authgate run` in its own process, with sessions in a real
redis-server, in front of the echo upstream in a *separate* process, so the
resident set measured is authgate's alone. The session is written to Redis
by the test through the session store, as a login on another replica would,
which proves the authenticated path (not a public shortcut) streams too.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
import yaml

from authgate.session.sessions import Session, SessionStore
from tests.conftest import redis_kv
from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 200 * 1024 * 1024
CHUNK = 256 * 1024
MAX_GROWTH = 30 * 1024 * 1024
UPSTREAM_MAIN = (
    "import sys\n"
    "from aiohttp import web\n"
    "from tests.upstream_app import create_upstream\n"
    "web.run_app(create_upstream(), host='127.0.0.1', port=int(sys.argv[1]), print=None)\n"
)


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RssSampler:
    """Samples one process's resident set from a thread, independent of the test's loop."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.01)

    def __enter__(self) -> RssSampler:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


class Stack:
    def __init__(self, authgate: subprocess.Popen[bytes], url: str, cookie: str) -> None:
        self.authgate = authgate
        self.url = url
        self.cookie = cookie

    def rss(self) -> int:
        return psutil.Process(self.authgate.pid).memory_info().rss


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    upstream_port, authgate_port = free_port(), free_port()
    upstream = _spawn([sys.executable, "-c", UPSTREAM_MAIN, str(upstream_port)])
    config = {
        "listen": f"127.0.0.1:{authgate_port}",
        "public_url": f"http://127.0.0.1:{authgate_port}",
        "upstream": {"url": f"http://127.0.0.1:{upstream_port}"},
        "session": {"store": "redis", "redis": {"url": redis_url}},
        "metrics": {"enabled": False},
        "audit": {"output": "stdout"},
    }
    path = tmp_path / "authgate.yaml"
    path.write_text(yaml.safe_dump(config))
    authgate = _spawn([str(ROOT / ".venv/bin/authgate"), "run", "--config", str(path)])
    try:
        wait_for_port(upstream_port)
        wait_for_port(authgate_port)
        session = asyncio.run(_create_session(redis_url))
        yield Stack(authgate, f"http://127.0.0.1:{authgate_port}", f"authgate={session.id}")
    finally:
        _stop(authgate)
        _stop(upstream)


async def _create_session(redis_url: str) -> Session:
    kv = redis_kv(redis_url)
    try:
        return await SessionStore(kv, 3600, 3600).create(
            Session(
                user_id="u-stream", connection="corp", subject="s", username="alice@example.com",
                email="alice@example.com", name="Alice", groups=("Engineering",),
                roles=("viewer",), created_at=0, last_seen=0, expires_at=0,
            )
        )  # fmt: skip
    finally:
        await kv.close()


async def _zeros(total: int) -> AsyncIterator[bytes]:
    block = bytes(CHUNK)
    sent = 0
    while sent < total:
        piece = block[: min(CHUNK, total - sent)]
        sent += len(piece)
        yield piece


async def _upload(stack: Stack, total: int) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            stack.url + "/upload", data=_zeros(total), headers={"Cookie": stack.cookie}
        ) as resp,
    ):
        assert resp.status == 200
        return await resp.json()


async def _download(stack: Stack, total: int) -> int:
    received = 0
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.get(f"{stack.url}/__download/{total}", headers={"Cookie": stack.cookie}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(total)
        async for chunk in resp.content.iter_chunked(CHUNK):
            received += len(chunk)
    return received


def _warm_baseline(stack: Stack) -> int:
    """RSS after one small transfer each way, so lazy imports and first buffers are counted."""
    asyncio.run(_upload(stack, 4 * CHUNK))
    asyncio.run(_download(stack, 4 * CHUNK))
    time.sleep(0.2)
    return stack.rss()


def test_unauthenticated_stream_is_refused_before_reaching_upstream(stack: Stack):
    """The fixture's session is the only way in: without the cookie the upload is refused."""

    async def attempt() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(stack.url + "/upload", data=_zeros(4 * CHUNK)) as resp,
        ):
            return resp.status, (await resp.json())["error"]

    assert asyncio.run(attempt()) == (401, "unauthenticated")


def test_upload_of_200_mb_streams_with_bounded_memory(stack: Stack):
    baseline = _warm_baseline(stack)
    with RssSampler(stack.authgate.pid) as rss:
        echoed = asyncio.run(_upload(stack, TOTAL))
    assert echoed["body_bytes"] == TOTAL
    growth = rss.peak - baseline
    assert growth < MAX_GROWTH, f"authgate grew by {growth / 2**20:.1f} MiB for a 200 MiB upload"


def test_download_of_200_mb_streams_with_bounded_memory(stack: Stack):
    baseline = _warm_baseline(stack)
    with RssSampler(stack.authgate.pid) as rss:
        received = asyncio.run(_download(stack, TOTAL))
    assert received == TOTAL
    growth = rss.peak - baseline
    assert growth < MAX_GROWTH, f"authgate grew by {growth / 2**20:.1f} MiB for a 200 MiB download"
