"""The assertion key ring after Redis lost its data: every replica keeps signing with one key.

Replicas are whole apps (`create_app` behind the real listener) sharing a real
redis-server that keeps nothing on disk, as the chart's trial Redis does.
Before, a replica that found the ring gone made a new one while the others
kept theirs for up to a minute, so upstreams rejected half the assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from authgate.app import create_app, front_site
from authgate.settings import Settings
from authgate.web.state import STATE, State
from tests.integration.test_session_cache import until
from tests.servers import RedisServer, free_port


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_settings(settings_factory: Callable[..., Settings], own_redis: RedisServer) -> Settings:
    return settings_factory(
        session={"store": "redis", "redis": {"url": own_redis.url, "timeout": "500ms"}}
    )


@contextlib.asynccontextmanager
async def replica(settings: Settings) -> AsyncIterator[State]:
    app = create_app(settings)
    async with front_site(app, f"127.0.0.1:{free_port()}", False):
        yield app[STATE]


def kid(st: State) -> str:
    assert st.signer is not None
    return st.signer.ring.current.kid


async def ring_stored(st: State) -> bool:
    try:
        return await st.kv.get("assertion-keys") is not None
    except Exception:
        return False


async def test_a_redis_restart_without_persistence_keeps_the_ring(
    redis_settings: Settings, own_redis: RedisServer
):
    async with replica(redis_settings) as a, replica(redis_settings) as b:
        before = kid(a)
        assert kid(b) == before
        own_redis.stop()
        own_redis.start()
        started = time.monotonic()
        while not await ring_stored(a):
            assert time.monotonic() - started < 5.0, "no replica put the ring back"
            await asyncio.sleep(0.01)
        restored = time.monotonic() - started
        async with replica(redis_settings) as c:
            assert kid(c) == before
        assert kid(a) == kid(b) == before
    print(f"ring back in the store {restored:.2f}s after Redis came back")


async def test_a_ring_written_by_one_replica_reaches_the_others_at_once(
    redis_settings: Settings, own_redis: RedisServer
):
    """FLUSHALL breaks no connection: the replica that writes a new ring tells the others."""
    async with replica(redis_settings) as a, replica(redis_settings) as b:
        before = kid(a)
        own_redis.flush()
        async with replica(redis_settings) as c:
            assert kid(c) != before
            took = await until(lambda: kid(a) == kid(b) == kid(c), within=2.0)
    print(f"replicas agreed on the new ring in {took:.2f}s")
