"""A Sentinel failover under two `authgate run` processes (SPEC §7).

A real master, its replica and a sentinel; the processes find the master
through the sentinel. `SENTINEL FAILOVER` promotes the replica while a steady
stream of requests runs with live sessions and with one that was logged out
before (and replicated): live ones get 200 or, during the switch, 503; the
logged-out one is never served; afterwards the live ones work without
restarting authgate, and a logout on one process is refused by the other at once.

Sentinel demotes the old master only about ten seconds after it promoted the
replica; until then the old master still takes the writes of every
connection made to it before. A logout that answered 200 in that window must
stay effective once the old master has been made a replica and has dropped
what it was told meanwhile: SPEC §7 names failover among the events after
which no replica serves a session whose logout answered.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from aiohttp import ClientSession, DummyCookieJar

from authgate.session.redis import RedisStore, connect
from authgate.settings import RedisSettings
from tests.faults.harness import (
    Answer,
    Holder,
    Load,
    Stack,
    ask,
    assert_upstream_saw_exactly_the_admitted,
    first,
    logout,
    new_session,
    new_user,
    on,
    sentinel_config,
    settled,
    stack,
    statuses,
)
from tests.servers import RedisSentinel

# Longer than the failover: until Sentinel demotes the old master (~10 s after the
# promotion) touches land there and are lost, so the new master only has older ones.
IDLE = 60.0


@dataclass
class Failover:
    servers: RedisSentinel
    stack: Stack


@pytest.fixture(scope="module")
def failover(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Failover]:
    servers = RedisSentinel(replicas=1).start()
    try:
        work = tmp_path_factory.mktemp("sentinel-failover")
        with stack(work, sentinel_config(servers), idle=IDLE) as running:
            yield Failover(servers, running)
    finally:
        servers.stop()


@pytest.fixture
async def kv(failover: Failover) -> AsyncIterator[RedisStore]:
    settings = RedisSettings(**sentinel_config(failover.servers))
    store = RedisStore(connect(settings), "authgate:")
    yield store
    await store.close()


async def holder(kv: RedisStore, label: str) -> Holder:
    user = await new_user(kv)
    return Holder(label, (await new_session(kv, user, idle=IDLE)).id, user.email)


async def replicated(kv: RedisStore) -> None:
    """Everything written so far is on the replica: WAIT after a write of our own, which
    the replication stream carries after every earlier write of any client."""
    await kv.set("replicated", b"1")
    assert await kv._redis.wait(1, 5000) == 1


async def test_a_failover_keeps_sessions_and_never_serves_a_logged_out_one(
    failover: Failover, kv: RedisStore
):
    gates = failover.stack.gates
    live = [await holder(kv, f"live{i}") for i in range(2)]
    out = await holder(kv, "out")
    async with ClientSession(cookie_jar=DummyCookieJar()) as http:
        assert {(await ask(http, gate, out)).status for gate in gates} == {200}
        assert (await logout(http, gates[0], out)).status == 200
        await replicated(kv)
        async with Load(http, gates, [*live, out]) as load:
            # Real time is the point: a steady stream before, during and after the failover.
            await asyncio.sleep(1.0)
            started = time.monotonic()
            took = await asyncio.to_thread(failover.servers.failover)
            done = time.monotonic()
            await settled(load, 200, done)
        late = live[1]
        signed_out = await logout(http, gates[0], late)
        refused = [await ask(http, gate, late) for gate in reversed(gates)]

    answers = load.answers
    print(f"\nSENTINEL FAILOVER: {took:.1f} s until every node agreed")
    for gate in gates:
        mine = on(answers, gate.name)
        switching = [a for a in mine if started <= a.sent < done and a.label != "out"]
        logged_out = [a for a in mine if a.label == "out"]
        print(
            f"failover {gate.name}: live sessions during it {statuses(switching)},"
            f" the logged-out one {statuses(logged_out)} in {len(mine)} requests"
        )
    served = [a for a in answers if a.label == "out" and a.status == 200]
    assert not served, f"a session logged out before the failover was served {len(served)} times"
    assert {(a.status, a.reason) for a in answers if a.label == "out"} <= {
        (401, "unauthenticated"),
        (503, "store_unavailable"),
    }
    assert {(a.status, a.reason) for a in answers if a.label != "out"} <= {
        (200, None),
        (503, "store_unavailable"),
    }
    for gate in gates:
        kept = [a for a in on(answers, gate.name) if a.label != "out"]
        back = first(kept, 200, done)
        assert back is not None
        after = [a for a in kept if a.sent >= back.answered]
        assert after and statuses(after) == {200: len(after)}, statuses(after)
    assert signed_out.status == 200
    assert [(a.status, a.reason) for a in refused] == [(401, "unauthenticated")] * len(gates)
    assert_upstream_saw_exactly_the_admitted(failover.stack, [*answers, *refused], [*live, out])


async def test_a_logout_answered_during_a_failover_is_never_undone(
    failover: Failover, kv: RedisStore
):
    gates = failover.stack.gates
    live = await holder(kv, "live")
    leaving = [await holder(kv, f"leaving-{gate.name}") for gate in gates]
    async with ClientSession(cookie_jar=DummyCookieJar()) as http:
        for h in (live, *leaving):
            assert {(await ask(http, gate, h)).status for gate in gates} == {200}
        async with Load(http, gates, [live, *leaving]) as load:
            # Real time is the point: the processes serve from their caches before the switch.
            await asyncio.sleep(0.5)
            loop, named = asyncio.get_running_loop(), asyncio.Event()
            switch = functools.partial(loop.call_soon_threadsafe, named.set)
            switching = asyncio.create_task(asyncio.to_thread(failover.servers.failover, switch))
            await named.wait()
            promoted = time.monotonic()
            # Real time is the point: well inside the window before the old master's demotion.
            await asyncio.sleep(0.5)
            logouts = [await logout(http, gate, h) for gate, h in zip(gates, leaving, strict=True)]
            await switching
            done = time.monotonic()
            await settled(load, 200, done)

    answers = load.answers
    print()
    stale: list[Answer] = []
    for answer, h in zip(logouts, leaving, strict=True):
        assert (answer.status, answer.reason) in {(200, None), (503, "store_unavailable")}
        after = [a for a in answers if a.label == h.label and a.sent >= answer.answered]
        served = [a for a in after if a.status == 200] if answer.status == 200 else []
        stale += served
        where = ", ".join(
            f"{len(on(served, g.name))} by {g.name} from"
            f" {min(a.sent for a in on(served, g.name)) - answer.answered:.1f} s after it answered"
            for g in gates
            if on(served, g.name)
        )
        print(
            f"logout of {h.label} {answer.sent - promoted:.2f} s after the promotion:"
            f" {answer.status}; then {statuses(after)} in the requests sent after it;"
            f" served again {len(served)} times{': ' + where if where else ''}"
        )
    assert_upstream_saw_exactly_the_admitted(failover.stack, answers, [live, *leaving])
    assert not stale, (
        f"{len(stale)} requests were served with a session whose logout had answered 200"
        f" during the failover (on {sorted({a.gate for a in stale})})"
    )
