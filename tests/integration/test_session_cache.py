"""The in-process session cache: revocation reaches every replica at once, an outage empties it.

Two `SessionStore`s over separate clients of the same real Redis (standalone,
Sentinel and Cluster) stand for two replicas, each with its cache and its
subscription running, as `create_app` wires them. The cache may only ever
answer for a session that the store would still accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from authgate.app import build_state
from authgate.session.cache import INVALIDATIONS, LIVENESS, SessionCache
from authgate.session.kv import KeyValueStore
from authgate.session.memory import MemoryStore
from authgate.session.redis import RedisStore, connect
from authgate.session.sessions import Session, SessionStore
from authgate.settings import RedisSettings
from tests.conftest import StoreBackend, _store_servers, make_settings
from tests.servers import RedisServer

SETTLE = 2.0


def template(user_id: str = "u-1") -> Session:
    return Session(
        user_id=user_id,
        connection="corp",
        subject="s",
        username="alice@example.com",
        email="alice@example.com",
        name="Alice",
        groups=("Engineering",),
        roles=("viewer",),
        created_at=0,
        last_seen=0,
        expires_at=0,
    )


@dataclass
class Replica:
    kv: KeyValueStore
    sessions: SessionStore
    cache: SessionCache
    listener: asyncio.Task[None]


async def until(check: Callable[[], bool], within: float = SETTLE) -> float:
    """Seconds until `check()` held; fails after `within`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "condition not reached in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def replica(kv: KeyValueStore, idle: float = 3600.0) -> AsyncIterator[Replica]:
    cache = SessionCache()
    stop = asyncio.Event()
    listener = asyncio.create_task(kv.listen(INVALIDATIONS, cache, stop))
    try:
        await until(cache.usable)
        yield Replica(kv, SessionStore(kv, 7200, idle, cache=cache), cache, listener)
    finally:
        stop.set()
        await asyncio.wait_for(listener, 5)


@pytest.fixture(params=("redis", "sentinel", "cluster"))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[StoreBackend]:
    kind: str = request.param
    store = StoreBackend(kind, *_store_servers(request, kind))
    yield store
    await store.close()


async def test_logout_on_one_replica_empties_the_others_cache(backend: StoreBackend):
    async with replica(backend.client()) as a, replica(backend.client()) as b:
        session = await a.sessions.create(template())
        assert await b.sessions.load(session.id) is not None
        assert b.sessions.cached(session.id) is not None
        await a.sessions.delete(session)
        took = await until(lambda: b.sessions.cached(session.id) is None)
        assert took < 1.0
        assert await b.sessions.load(session.id) is None


async def test_revoking_a_user_empties_every_cache(backend: StoreBackend):
    async with replica(backend.client()) as a, replica(backend.client()) as b:
        first = await a.sessions.create(template("u-9"))
        second = await a.sessions.create(template("u-9"))
        for sid in (first.id, second.id):
            await b.sessions.load(sid)
        assert await a.sessions.revoke_user("u-9") == 2
        await until(lambda: all(b.sessions.cached(s) is None for s in (first.id, second.id)))


async def test_changed_claims_are_not_served_stale(backend: StoreBackend):
    async with replica(backend.client()) as a, replica(backend.client()) as b:
        session = await a.sessions.create(template())
        await b.sessions.load(session.id)
        renewed = await a.sessions.update(replace(session, groups=("admins",)))
        assert renewed is not None
        await until(lambda: b.sessions.cached(session.id) is None)
        reloaded = await b.sessions.load(session.id)
        assert reloaded is not None and reloaded.groups == ("admins",)


async def test_a_read_racing_a_revocation_is_not_kept(redis_url: str):
    """The store answered before the delete, the message came before the answer was kept."""
    kv = RedisStore(connect(RedisSettings(url=redis_url)))
    try:
        async with replica(kv) as a:
            session = await a.sessions.create(template())
            epoch = a.cache.epoch
            a.cache.received("someone-else's-digest")
            a.cache.offer("digest", session, epoch)
            assert a.cache.get("digest") is None
    finally:
        await kv.close()


async def test_nothing_is_served_from_memory_before_the_subscription_answers():
    cache = SessionCache()
    cache.offer("digest", template(), cache.epoch)
    assert cache.get("digest") is None
    cache.alive(time.monotonic())
    cache.offer("digest", template(), cache.epoch)
    assert cache.get("digest") is not None
    cache.lost()
    assert cache.get("digest") is None


async def test_a_session_due_for_its_touch_is_read_from_the_store(redis_url: str):
    kv = RedisStore(connect(RedisSettings(url=redis_url)))
    try:
        async with replica(kv, idle=10.0) as a:
            session = await a.sessions.create(template())
            await a.sessions.load(session.id)
            assert a.sessions.cached(session.id) is not None
            digest = hashlib.sha256(session.id.encode()).hexdigest()
            touch_due = replace(session, last_seen=time.time() - 1.5)
            a.cache.offer(digest, touch_due, a.cache.epoch)
            assert a.sessions.cached(session.id) is None
            expired = replace(session, expires_at=time.time() - 1)
            a.cache.offer(digest, expired, a.cache.epoch)
            assert a.sessions.cached(session.id) is None
    finally:
        await kv.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


async def test_a_stopped_redis_empties_the_cache_and_it_comes_back(own_redis: RedisServer):
    kv = RedisStore(connect(RedisSettings(url=own_redis.url, timeout=0.3)))
    try:
        async with replica(kv) as a:
            session = await a.sessions.create(template())
            await a.sessions.load(session.id)
            own_redis.stop()
            took = await until(lambda: a.sessions.cached(session.id) is None)
            assert took < LIVENESS + 0.25
            own_redis.start()
            await until(a.cache.usable, within=5.0)
            assert a.sessions.cached(session.id) is None, "what was cached before is gone"
    finally:
        await kv.close()


async def test_a_frozen_redis_stops_the_cache_within_liveness(own_redis: RedisServer):
    """SIGSTOP breaks no connection: only the unanswered heartbeats show the outage."""
    kv = RedisStore(connect(RedisSettings(url=own_redis.url, timeout=0.3)))
    try:
        async with replica(kv) as a:
            session = await a.sessions.create(template())
            await a.sessions.load(session.id)
            assert own_redis.proc is not None
            os.kill(own_redis.proc.pid, signal.SIGSTOP)
            try:
                took = await until(lambda: a.sessions.cached(session.id) is None)
            finally:
                os.kill(own_redis.proc.pid, signal.SIGCONT)
            assert took <= LIVENESS + 0.25
    finally:
        await kv.close()


async def test_the_memory_store_hears_nothing_and_stops_when_asked():
    kv = MemoryStore()
    cache = SessionCache()
    stop = asyncio.Event()
    listener = asyncio.create_task(kv.listen(INVALIDATIONS, cache, stop))
    await kv.publish(INVALIDATIONS, "digest")
    await asyncio.sleep(0.05)
    assert not listener.done()
    assert not cache.usable(), "nothing proves a memory store's subscription alive"
    stop.set()
    await asyncio.wait_for(listener, 1)


def test_the_memory_store_and_a_disabled_cache_get_no_cache(redis_url: str):
    settings = make_settings("http://127.0.0.1:1")
    assert build_state(settings, MemoryStore()).sessions.cache is None
    redis = make_settings(
        "http://127.0.0.1:1", session={"store": "redis", "redis": {"url": redis_url}}
    )
    kv = RedisStore(connect(RedisSettings(url=redis_url)))
    assert build_state(redis, kv).sessions.cache is not None
    off = make_settings(
        "http://127.0.0.1:1",
        session={"store": "redis", "redis": {"url": redis_url}, "cache": False},
    )
    assert build_state(off, kv).sessions.cache is None
