"""One contract for every KeyValueStore: memory, Redis standalone, Sentinel and Cluster.

Like oauth2-proxy's shared session-store suite, each test runs once per
topology (the `store_backend` fixture), always through the production
`authgate.session.redis.connect`, so a store that drifts from the others
fails here rather than in production.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot

from authgate.errors import StoreUnavailable
from authgate.session.redis import RedisStore, connect
from authgate.settings import RedisSettings
from tests.conftest import StoreBackend
from tests.servers import free_port

BINARY = b"\x00\xff\xfe binary \xc3\x28 value"
SHORT_TTL = 0.25
PAST_SHORT_TTL = 0.45


async def test_get_set_round_trip_keeps_bytes_exactly(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    assert await kv.get("missing") is None
    assert await kv.set("k", BINARY) is True
    assert await kv.get("k") == BINARY
    assert await kv.set("k", b"second") is True
    assert await kv.get("k") == b"second"


async def test_only_if_new_never_overwrites(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    assert await kv.set("nx", b"first", only_if_new=True) is True
    assert await kv.set("nx", b"second", only_if_new=True) is False
    assert await kv.get("nx") == b"first"
    await kv.delete("nx")
    assert await kv.set("nx", b"third", only_if_new=True) is True


async def test_only_if_exists_never_creates(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    assert await kv.set("xx", b"ghost", only_if_exists=True) is False
    assert await kv.get("xx") is None, "a conditional rewrite must not resurrect a deleted key"
    await kv.set("xx", b"v1")
    assert await kv.set("xx", b"v2", only_if_exists=True) is True
    assert await kv.get("xx") == b"v2"


async def test_replace_is_compare_and_set(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    assert await kv.replace("cas", b"v0", b"v1") is False, "no key, nothing to compare"
    assert await kv.get("cas") is None
    await kv.set("cas", b"v0", ttl=30)
    assert await kv.replace("cas", b"stale", b"v1") is False
    assert await kv.get("cas") == b"v0"
    assert await kv.replace("cas", b"v0", BINARY) is True
    assert await kv.get("cas") == BINARY


async def test_delete_if_is_compare_and_delete(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    await kv.set("lock", b"mine", ttl=30)
    assert not await kv.delete_if("lock", b"theirs")
    assert await kv.get("lock") == b"mine"
    assert await kv.delete_if("lock", b"mine")
    assert await kv.get("lock") is None
    assert not await kv.delete_if("lock", b"mine"), "gone keys are not deleted twice"


async def test_replace_keeps_the_ttl(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    await kv.set("cas-ttl", b"v0", ttl=SHORT_TTL)
    assert await kv.replace("cas-ttl", b"v0", b"v1") is True
    await asyncio.sleep(PAST_SHORT_TTL)
    assert await kv.get("cas-ttl") is None


async def test_replace_has_one_winner_across_replicas(store_backend: StoreBackend) -> None:
    replicas = [store_backend.client() for _ in range(2)]
    await replicas[0].set("cas-race", b"start")
    results = await asyncio.gather(
        *(replicas[i % 2].replace("cas-race", b"start", str(i).encode()) for i in range(10))
    )
    assert results.count(True) == 1


async def test_both_conditions_at_once_is_a_programming_error(
    store_backend: StoreBackend,
) -> None:
    kv = store_backend.client()
    with pytest.raises(ValueError, match="exclude each other"):
        await kv.set("k", b"v", only_if_new=True, only_if_exists=True)


async def test_only_if_new_has_exactly_one_winner_across_replicas(
    store_backend: StoreBackend,
) -> None:
    replicas = [store_backend.client() for _ in range(2)]
    results = await asyncio.gather(
        *(replicas[i % 2].set("race", str(i).encode(), only_if_new=True) for i in range(20))
    )
    assert results.count(True) == 1
    winner = results.index(True)
    assert await replicas[1].get("race") == str(winner).encode()


async def test_a_fresh_client_takes_a_burst_of_first_commands(
    store_backend: StoreBackend,
) -> None:
    """Requests arriving together right after start-up must not break a new client.

    redis-py 8.x's cluster client fails most such bursts unless RedisStore
    initialises it once first; several fresh clients make the race certain.
    """
    await store_backend.client().set("warm", b"v")
    for _ in range(5):
        fresh = store_backend.client()
        results = await asyncio.gather(*(fresh.get("warm") for _ in range(20)))
        assert results == [b"v"] * 20


async def test_take_consumes_exactly_once(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    assert await kv.take("nothing") is None
    await kv.set("once", b"secret")
    assert await kv.take("once") == b"secret"
    assert await kv.take("once") is None
    assert await kv.get("once") is None


async def test_take_has_exactly_one_winner_across_replicas(store_backend: StoreBackend) -> None:
    replicas = [store_backend.client() for _ in range(2)]
    await replicas[0].set("ticket", b"t")
    results = await asyncio.gather(*(replicas[i % 2].take("ticket") for i in range(20)))
    assert results.count(b"t") == 1
    assert results.count(None) == 19


async def test_a_second_replica_sees_every_write(store_backend: StoreBackend) -> None:
    writer, reader = store_backend.client(), store_backend.client()
    await writer.set("shared", b"v")
    await writer.add_member("shared-set", "m")
    await writer.hset("shared-hash", {"f": "v"})
    assert await reader.get("shared") == b"v"
    assert await reader.members("shared-set") == {"m"}
    assert await reader.hgetall("shared-hash") == {"f": "v"}


def _keys_on_every_master(masters: int = 3) -> list[str]:
    """One key well inside each master's slot range as `redis-cli --cluster create` splits it."""
    share = 16384 // masters
    found: dict[int, str] = {}
    n = 0
    while len(found) < masters:
        key = f"spread-{n}"
        slot = key_slot(f"authgate:{key}".encode())
        if 100 < slot % share < share - 100:
            found.setdefault(slot // share, key)
        n += 1
    return [found[i] for i in range(masters)]


async def test_delete_counts_existing_keys_across_slots(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    keys = _keys_on_every_master()
    for key in keys:
        await kv.set(key, b"x")
    assert await kv.delete() == 0
    assert await kv.delete(*keys, "never-written") == 3
    for key in keys:
        assert await kv.get(key) is None
    assert await kv.delete(*keys) == 0


async def test_expire_on_a_missing_key_creates_nothing(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    await kv.expire("absent", 10)
    assert await kv.get("absent") is None
    assert await kv.set("absent", b"v", only_if_new=True) is True


async def test_set_members(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    assert await kv.members("s") == set()
    await kv.add_member("s", "a")
    await kv.add_member("s", "a")
    await kv.add_member("s", "b")
    assert await kv.members("s") == {"a", "b"}
    await kv.remove_member("s", "a")
    await kv.remove_member("s", "never-added")
    await kv.remove_member("no-such-set", "a")
    assert await kv.members("s") == {"b"}
    await kv.remove_member("s", "b")
    assert await kv.members("s") == set()
    assert await kv.delete("s") == 0, "an emptied set is gone, as in Redis"


async def test_hash_fields_merge_and_overwrite(store_backend: StoreBackend) -> None:
    kv = store_backend.client()
    assert await kv.hgetall("h") == {}
    await kv.hset("h", {"a": "1", "b": "2"})
    await kv.hset("h", {"b": "3", "ü": "ünïcode"})
    assert await kv.hgetall("h") == {"a": "1", "b": "3", "ü": "ünïcode"}


async def test_ttls_expire_and_never_shrink(store_backend: StoreBackend) -> None:
    """All expiry rules in one real wait, so the suite sleeps once per store."""
    kv = store_backend.client()
    await kv.set("ttl", b"v", ttl=SHORT_TTL)
    await kv.set("ttl-nx", b"v", ttl=SHORT_TTL, only_if_new=True)
    await kv.set("expired-later", b"v")
    await kv.expire("expired-later", SHORT_TTL)
    await kv.add_member("set-ttl", "m", ttl=SHORT_TTL)
    await kv.hset("hash-ttl", {"f": "v"})
    await kv.expire("hash-ttl", SHORT_TTL)
    await kv.set("made-permanent", b"v", ttl=SHORT_TTL)
    await kv.set("made-permanent", b"v2")
    await kv.set("rewritten-xx", b"v", ttl=SHORT_TTL)
    await kv.set("rewritten-xx", b"v2", ttl=30, only_if_exists=True)
    await kv.add_member("set-extended", "m", ttl=SHORT_TTL)
    await kv.add_member("set-extended", "n", ttl=30)
    await kv.add_member("set-not-shortened", "m", ttl=30)
    await kv.add_member("set-not-shortened", "n", ttl=SHORT_TTL)
    await kv.hset("hash-keeps-ttl", {"f": "v"})
    await kv.expire("hash-keeps-ttl", SHORT_TTL)
    await kv.hset("hash-keeps-ttl", {"g": "w"})
    assert await kv.get("ttl") == b"v"

    await asyncio.sleep(PAST_SHORT_TTL)

    assert await kv.get("ttl") is None
    assert await kv.take("ttl-nx") is None
    assert await kv.get("expired-later") is None
    assert await kv.members("set-ttl") == set()
    assert await kv.hgetall("hash-ttl") == {}
    assert await kv.hgetall("hash-keeps-ttl") == {}, "HSET must not clear a key's TTL"
    assert await kv.get("made-permanent") == b"v2", "a plain set drops the earlier TTL"
    assert await kv.get("rewritten-xx") == b"v2"
    assert await kv.members("set-extended") == {"m", "n"}
    assert await kv.members("set-not-shortened") == {"m", "n"}
    assert await kv.set("ttl-nx", b"again", only_if_new=True) is True


REDIS_KINDS = ("redis", "sentinel", "cluster")


@pytest.mark.parametrize("store_backend", REDIS_KINDS, indirect=True)
async def test_key_prefix_separates_deployments(store_backend: StoreBackend) -> None:
    assert store_backend.redis is not None
    other_settings = store_backend.redis.model_copy(update={"key_prefix": "other-app:"})
    ours, theirs = store_backend.client(), RedisStore(connect(other_settings), "other-app:")
    try:
        await ours.set("k", b"ours")
        assert await theirs.get("k") is None
        assert await theirs.set("k", b"theirs", only_if_new=True) is True
        assert await ours.get("k") == b"ours"
        assert "authgate:k = ours" in await store_backend.raw_dump()
    finally:
        await theirs.close()


def _dead_settings() -> list[RedisSettings]:
    """Each topology pointed at a port nothing listens on."""
    node = f"127.0.0.1:{free_port()}"
    return [
        RedisSettings(url=f"redis://{node}/0", timeout=0.5),
        RedisSettings(sentinel={"master": "authgate", "nodes": [node]}, timeout=0.5),
        RedisSettings(cluster_nodes=[node], timeout=0.5),
    ]


PRIMITIVES = {
    "get": lambda kv: kv.get("k"),
    "set": lambda kv: kv.set("k", b"v", ttl=1),
    "set_nx": lambda kv: kv.set("k", b"v", only_if_new=True),
    "take": lambda kv: kv.take("k"),
    "delete": lambda kv: kv.delete("k", "j"),
    "expire": lambda kv: kv.expire("k", 1),
    "add_member": lambda kv: kv.add_member("s", "m", ttl=1),
    "remove_member": lambda kv: kv.remove_member("s", "m"),
    "members": lambda kv: kv.members("s"),
    "hset": lambda kv: kv.hset("h", {"f": "v"}),
    "hgetall": lambda kv: kv.hgetall("h"),
    "ping": lambda kv: kv.ping(),
    "publish": lambda kv: kv.publish("c", "m"),
    "publish_confirmed": lambda kv: kv.publish("c", "m", confirm=True),
}


@pytest.mark.parametrize("settings", _dead_settings(), ids=["redis", "sentinel", "cluster"])
async def test_unreachable_store_fails_closed_on_every_primitive(settings: RedisSettings) -> None:
    """Never None or an empty set (which callers would read as "no session"), always 503."""
    kv = RedisStore(connect(settings))
    try:
        for name, call in PRIMITIVES.items():
            with pytest.raises(StoreUnavailable) as caught:
                await call(kv)
            assert caught.value.reason == "store_unavailable", name
            assert caught.value.status == 503, name
            assert "<" not in caught.value.detail, "no client reprs in operator-facing text"
    finally:
        await kv.close()


async def test_a_durable_delete_no_replica_acknowledged_fails_closed(redis_url: str) -> None:
    """`wait_replicas: 1` on a Redis with no replica: the revocation is not known to be safe."""
    settings = RedisSettings(url=redis_url, timeout=0.2, wait_replicas=1)
    kv = RedisStore(connect(settings), replicas=settings.revocation_replicas, timeout=0.2)
    try:
        await kv.set("k", b"v")
        with pytest.raises(StoreUnavailable) as refused:
            await kv.delete("k", durable=True)
        assert refused.value.detail == "a revocation reached 0 of 1 replicas in time"
        assert await kv.delete("gone") == 0, "a plain delete waits for nobody"
    finally:
        await kv.close()


def test_revocations_wait_for_a_replica_under_sentinel_only_by_default() -> None:
    sentinel = {"master": "authgate", "nodes": ["127.0.0.1:26379"]}
    assert RedisSettings(sentinel=sentinel).revocation_replicas == 1
    assert RedisSettings(sentinel=sentinel, wait_replicas=0).revocation_replicas == 0
    assert RedisSettings(url="redis://127.0.0.1:6379/0").revocation_replicas == 0
