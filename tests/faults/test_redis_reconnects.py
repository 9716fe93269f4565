"""Redis closing connections under authgate: idle timeouts and killed subscriptions.

A real redis-server closes authgate's pooled connections the way a restart, a
failover or its own idle `timeout` does. No request may pay for a connection
that died while idle, and a subscription that redis-py re-establishes on its
own must still empty the cache, because the messages published meanwhile are
lost.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from authgate.session.redis import RedisStore, connect
from authgate.settings import RedisSettings
from tests.integration.test_session_cache import replica, template, until
from tests.servers import RedisServer


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def redis_cli(server: RedisServer, *args: str) -> str:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli comes with redis-server: install redis-server"
    done = subprocess.run(
        [cli, "-p", str(server.port), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


async def test_connections_redis_closed_while_idle_cost_no_request_an_error(
    own_redis: RedisServer,
):
    """`CONFIG SET timeout 1`: every pooled connection is dead at the next burst of requests."""
    kv = RedisStore(connect(RedisSettings(url=own_redis.url, timeout=0.5)))
    try:
        await kv.set("k", b"v")
        burst = 8
        assert await asyncio.gather(*(kv.get("k") for _ in range(burst))) == [b"v"] * burst
        redis_cli(own_redis, "CONFIG", "SET", "timeout", "1")
        failures = 0
        for _ in range(2):
            # Real time is the point: Redis closes a connection idle for over a second.
            await asyncio.sleep(2.2)
            results = await asyncio.gather(
                *(kv.get("k") for _ in range(burst)), return_exceptions=True
            )
            failures += sum(1 for r in results if r != b"v")
        assert failures == 0, f"{failures} requests failed on connections Redis had closed"
    finally:
        await kv.close()


async def test_a_killed_subscription_reconnected_by_redis_py_empties_the_cache(
    own_redis: RedisServer,
):
    """Whatever was published while the subscription was down is lost: nothing cached survives."""
    kv = RedisStore(connect(RedisSettings(url=own_redis.url, timeout=0.5)))
    try:
        async with replica(kv) as a:
            session = await a.sessions.create(template())
            await a.sessions.load(session.id)
            assert a.sessions.cached(session.id) is not None
            epoch = a.cache.epoch
            started = time.monotonic()
            assert int(redis_cli(own_redis, "CLIENT", "KILL", "TYPE", "pubsub")) >= 1
            await until(lambda: a.cache.epoch != epoch)
            assert a.sessions.cached(session.id) is None
            await until(a.cache.usable, within=5.0)
            print(f"\nsubscription back and cache usable after {time.monotonic() - started:.2f} s")
            assert a.sessions.cached(session.id) is None, "nothing from before the loss is served"
    finally:
        await kv.close()
