"""Once a logout has answered, no replica serves that session again, even a paused one.

Two real `authgate run` processes share one redis-server; B has the session in
its cache. B is frozen (SIGSTOP, as CPU throttling or a long GC pause would)
for 0.1-0.5 s while every pub/sub connection is killed, so B never hears the
invalidation, and the user logs out on A. Requests reach B only after A's
logout answered; they wait in B's socket backlog until SIGCONT, so B's first
act on waking is to answer them. Before, B served 200 to some of them from
its cache (11 of 18 runs when measured); the logout now waits until every
registered replica confirmed or can no longer be serving from memory.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from aiohttp import ClientSession, DummyCookieJar

from authgate.session.redis import RedisStore, connect
from authgate.settings import RedisSettings
from tests.faults.harness import (
    Process,
    new_session,
    new_user,
    stack,
)
from tests.faults.test_redis_reconnects import redis_cli
from tests.integration.test_two_processes import proxied_user
from tests.servers import RedisServer

RUNS = 8
REQUESTS_AFTER_LOGOUT = 6


@dataclass(frozen=True)
class Pair:
    redis: RedisServer
    a: Process
    b: Process


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    redis = RedisServer().start()
    try:
        with stack(tmp_path_factory.mktemp("strict-revocation"), redis.url) as running:
            yield Pair(redis, *running.gates)
    finally:
        redis.stop()


@pytest.fixture
async def kv(pair: Pair) -> AsyncIterator[RedisStore]:
    store = RedisStore(connect(RedisSettings(url=pair.redis.url)), "authgate:")
    yield store
    await store.close()


async def status_of(http: ClientSession, base: str, sid: str) -> int:
    headers = {"Cookie": f"authgate={sid}", "Accept": "application/json"}
    async with http.get(base + "/app/page", headers=headers, allow_redirects=False) as resp:
        await resp.read()
        return resp.status


async def logout(http: ClientSession, base: str, sid: str) -> float:
    """Sign out as the app's own page would; the time the answer arrived."""
    headers = {"Cookie": f"authgate={sid}", "Sec-Fetch-Site": "same-origin"}
    async with http.post(base + "/_authgate/logout", headers=headers) as resp:
        await resp.read()
        assert resp.status == 200
    return time.monotonic()


async def one_run(pair: Pair, kv: RedisStore, http: ClientSession, pause: float) -> list[int]:
    """The statuses B gave to requests sent after A's logout answered."""
    session = await new_session(kv, await new_user(kv))
    for _ in range(2):
        assert await proxied_user(http, pair.b.url, session.id) is not None
    os.kill(pair.b.pid, signal.SIGSTOP)
    resumed = asyncio.get_running_loop().call_later(pause, os.kill, pair.b.pid, signal.SIGCONT)
    try:
        redis_cli(pair.redis, "CLIENT", "KILL", "TYPE", "pubsub")
        await logout(http, pair.a.url, session.id)
        after = [status_of(http, pair.b.url, session.id) for _ in range(REQUESTS_AFTER_LOGOUT)]
        return list(await asyncio.gather(*after))
    finally:
        resumed.cancel()
        os.kill(pair.b.pid, signal.SIGCONT)


async def test_a_paused_replica_never_serves_a_session_after_its_logout_answered(
    pair: Pair, kv: RedisStore
):
    rng = random.Random(7)
    stale = 0
    waits: list[float] = []
    async with ClientSession(cookie_jar=DummyCookieJar()) as http:
        for _ in range(RUNS):
            # Real time is the point: both subscriptions come back before the next run.
            await asyncio.sleep(1.5)
            started = time.monotonic()
            statuses = await one_run(pair, kv, http, rng.uniform(0.1, 0.5))
            waits.append(time.monotonic() - started)
            assert set(statuses) <= {200, 401}, statuses
            stale += statuses.count(200)
    print(f"stale serves after logout: {stale} of {RUNS * REQUESTS_AFTER_LOGOUT}")
    print(f"run length (pause, logout, requests): max {max(waits):.2f}s")
    assert stale == 0


async def test_healthy_replicas_confirm_a_logout_instead_of_being_waited_out(
    pair: Pair, kv: RedisStore
):
    """Every replica answers the revocation: the logout does not sit out the liveness window."""
    before = pair.a.log.read_text()
    async with ClientSession(cookie_jar=DummyCookieJar()) as http:
        # Real time is the point: both subscriptions are up after the previous test's kills.
        await asyncio.sleep(1.5)
        session = await new_session(kv, await new_user(kv))
        assert await proxied_user(http, pair.b.url, session.id) is not None
        started = time.monotonic()
        answered = await logout(http, pair.a.url, session.id)
        assert await status_of(http, pair.b.url, session.id) == 401
    print(f"logout answered in {1000 * (answered - started):.1f} ms with every replica confirming")
    assert "did not confirm" not in pair.a.log.read_text()[len(before) :]
