"""Redis killed, frozen and restarted under two `authgate run` processes (SPEC §7).

A steady stream of proxied requests with valid sessions runs on both
processes while the test SIGKILLs, SIGSTOPs or restarts their redis-server,
and every answer is judged by when it was sent: before the fault, once the
outage must have been noticed, after Redis is back. Fail closed means 503
`store_unavailable` for every request that needs the store once the session
cache can no longer vouch for it (LIVENESS after the last sign of life of the
subscription); nothing needs a restart of authgate afterwards; and the upstream
received exactly the requests that were answered 200, each with its own user.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from aiohttp import ClientSession, DummyCookieJar

from authgate.session.cache import LIVENESS, MARGIN
from authgate.session.redis import RedisStore, connect
from authgate.settings import RedisSettings
from tests.faults.harness import (
    AOF,
    API,
    BROWSER,
    Answer,
    Holder,
    Load,
    Stack,
    ask,
    assert_upstream_saw_exactly_the_admitted,
    crash,
    first,
    freeze,
    logout,
    new_session,
    new_user,
    on,
    restart,
    sent_within,
    settled,
    stack,
    statuses,
    thaw,
)
from tests.servers import RedisServer

# The cache stops vouching for sessions LIVENESS after the last heartbeat it heard;
# from then on every request needs the store.
NOTICED = LIVENESS + MARGIN
DOWN = 2.0
# Short, so that a 2.5 s freeze shows requests that gave up on the store before SIGCONT.
TIMEOUT = 0.5
FREEZE = 2.5
# A frozen store may cost a request its attempt and the one retry on a fresh connection.
FROZEN_COST = 2 * TIMEOUT + 0.5


@dataclass
class Outage:
    redis: RedisServer
    stack: Stack


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    redis = RedisServer(extra=AOF).start()
    try:
        work = tmp_path_factory.mktemp("redis-outages")
        with stack(work, redis.url, store_timeout=TIMEOUT) as running:
            yield Outage(redis, running)
    finally:
        if redis.proc is not None:
            thaw(redis)
        redis.stop()


@pytest.fixture
def persistent(outage: Outage) -> Outage:
    """Redis with AOF, as README advises, whatever the previous test left."""
    if outage.redis.extra != AOF:
        outage.redis.kill()
        outage.redis.extra = AOF
        outage.redis.start()
        outage.stack.wait_ready()
    return outage


@pytest.fixture
async def kv(persistent: Outage) -> AsyncIterator[RedisStore]:
    store = RedisStore(connect(RedisSettings(url=persistent.redis.url)), "authgate:")
    yield store
    await store.close()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession(cookie_jar=DummyCookieJar()) as session:
        yield session


async def holder(kv: RedisStore, label: str) -> Holder:
    user = await new_user(kv)
    return Holder(label, (await new_session(kv, user)).id, user.email)


def assert_fail_closed(answers: list[Answer], what: str, reason: str = "store_unavailable") -> None:
    assert answers, f"no request {what}"
    refused = {(a.status, a.reason) for a in answers}
    assert refused == {(503, reason)}, f"{what}: {statuses(answers)} {refused}"


def assert_recovered(answers: list[Answer], back: float, gate: str) -> Answer:
    """The first 200 after Redis came back, and only 200 from then on."""
    recovered = first(on(answers, gate), 200, back)
    assert recovered is not None, f"{gate} never recovered"
    later = [a for a in on(answers, gate) if a.sent >= recovered.answered]
    assert later and statuses(later) == {200: len(later)}, f"{gate} after recovery"
    return recovered


async def test_redis_killed_under_load_fails_closed_then_recovers_without_a_restart(
    persistent: Outage, kv: RedisStore, http: ClientSession
):
    holders = [await holder(kv, f"live{i}") for i in range(3)]
    gates = persistent.stack.gates
    async with Load(http, gates, holders) as load:
        # Real time is the point: a steady stream before, during and after the outage.
        await asyncio.sleep(1.0)
        killed = await crash(persistent.redis)
        await asyncio.sleep(DOWN)
        restarting = time.monotonic()
        back = await restart(persistent.redis, AOF)
        await settled(load, 200, back)

    answers, ready = load.answers, load.ready
    assert set(statuses(answers)) <= {200, 503}, statuses(answers)
    assert statuses(sent_within(answers, 0, killed)) == {200: len(sent_within(answers, 0, killed))}
    print()
    for gate in gates:
        mine = on(answers, gate.name)
        noticed = first(mine, 503, killed)
        assert noticed is not None
        during = sent_within(mine, min(noticed.answered, killed + NOTICED), restarting)
        assert_fail_closed(during, f"to {gate.name} once the outage was noticed")
        recovered = assert_recovered(answers, back, gate.name)
        assert recovered.answered - back < 5.0
        assert_fail_closed(
            sent_within(on(ready, gate.name), killed, restarting), "readyz", "unavailable"
        )
        ready_again = assert_recovered(ready, back, gate.name)
        outage = sent_within(mine, killed, back)
        print(
            f"SIGKILL {gate.name}: first 503 {1000 * (noticed.answered - killed):.0f} ms"
            f" after the kill; during the outage {statuses(outage)},"
            f" slowest {1000 * max(a.took for a in outage):.0f} ms;"
            f" proxying again {1000 * (recovered.answered - back):.0f} ms and readyz 200"
            f" {1000 * (ready_again.answered - back):.0f} ms after Redis listened again;"
            f" {len(mine)} requests in all"
        )
    assert_upstream_saw_exactly_the_admitted(persistent.stack, answers, holders)


async def test_redis_frozen_answers_503_within_the_timeout_and_recovers_on_sigcont(
    persistent: Outage, kv: RedisStore, http: ClientSession
):
    """SIGSTOP: connections stay open and nothing answers, the hardest outage to notice."""
    holders = [await holder(kv, f"live{i}") for i in range(3)]
    gates = persistent.stack.gates
    async with Load(http, gates, holders) as load:
        # Real time is the point: a freeze is a span of time.
        await asyncio.sleep(1.0)
        frozen = time.monotonic()
        freeze(persistent.redis)
        try:
            await asyncio.sleep(FREEZE)
        finally:
            thawed = time.monotonic()
            thaw(persistent.redis)
        await settled(load, 200, thawed)

    answers, ready = load.answers, load.ready
    assert set(statuses(answers)) <= {200, 503}, statuses(answers)
    print()
    for gate in gates:
        mine = on(answers, gate.name)
        sent_frozen = [a for a in mine if frozen <= a.sent < thawed]
        refused = [a.took for a in sent_frozen if a.status == 503]
        late = [a.took for a in sent_frozen if a.status == 200 and a.took > TIMEOUT]
        probes = sent_within(on(ready, gate.name), frozen, thawed)
        recovered = first(mine, 200, thawed)
        print(
            f"SIGSTOP {gate.name}: sent during the {FREEZE} s freeze {statuses(sent_frozen)};"
            f" 503 after {1000 * min(refused):.0f}-{1000 * max(refused):.0f} ms"
            f" (store timeout {1000 * TIMEOUT:.0f} ms); {len(late)} got 200 at SIGCONT after"
            f" waiting longer than the timeout (up to {1000 * max(late, default=0):.0f} ms);"
            f" readyz during it {statuses(probes)}, slowest"
            f" {1000 * max(a.took for a in probes):.0f} ms; first 200"
            f" {1000 * (recovered.answered - thawed) if recovered else float('nan'):.0f} ms"
            " after SIGCONT"
        )
    for gate in gates:
        mine = on(answers, gate.name)
        during = [a for a in mine if frozen + NOTICED < a.answered < thawed]
        assert_fail_closed(during, f"answered by {gate.name} during the freeze")
        assert_recovered(answers, thawed, gate.name)
        probes = sent_within(on(ready, gate.name), frozen, thawed)
        assert_fail_closed(probes, "readyz", "unavailable")
        assert_recovered(ready, thawed, gate.name)
    assert_upstream_saw_exactly_the_admitted(persistent.stack, answers, holders)
    slowest = max(
        (a for a in [*answers, *ready] if frozen <= a.sent < thawed), key=lambda a: a.took
    )
    assert slowest.took < FROZEN_COST, (
        f"a request to {slowest.gate} waited {slowest.took:.2f} s for a store whose timeout is"
        f" {TIMEOUT} s (sent {slowest.sent - frozen:.2f} s into the freeze)"
    )


async def test_with_aof_a_crash_keeps_live_sessions_and_logged_out_ones_stay_out(
    persistent: Outage, kv: RedisStore, http: ClientSession
):
    """appendfsync always: a logout that answered is on disk before Redis can crash."""
    live, out = await holder(kv, "live"), await holder(kv, "out")
    gates = persistent.stack.gates
    answers = [await ask(http, gate, h) for gate in gates for h in (live, out)]
    assert statuses(answers) == {200: 4}
    signed_out = await logout(http, gates[0], out)
    assert signed_out.status == 200
    await crash(persistent.redis)
    await restart(persistent.redis, AOF)
    took = await asyncio.to_thread(persistent.stack.wait_ready)
    after = {
        (gate.name, h.label, kind): await ask(http, gate, h, headers)
        for gate in gates
        for h in (live, out)
        for kind, headers in (("api", API), ("browser", BROWSER))
    }
    for (gate, label, kind), answer in after.items():
        expected = {"live": 200, "out": 401 if kind == "api" else 302}[label]
        assert answer.status == expected, (gate, label, kind, answer)
    answers += after.values()
    print(f"\nAOF crash: ready again {1000 * took:.0f} ms after Redis listened;", end=" ")
    print(f"after it {statuses(after.values())} (live 200, logged out 401/302)")
    assert_upstream_saw_exactly_the_admitted(persistent.stack, answers, (live, out))


async def test_without_persistence_a_restart_ends_every_session_and_none_is_served_again(
    persistent: Outage, kv: RedisStore, http: ClientSession
):
    """Sessions the processes had cached must not outlive the data Redis lost."""
    holders = [await holder(kv, f"gone{i}") for i in range(3)]
    gates = persistent.stack.gates
    async with Load(http, gates, holders) as load:
        # Real time is the point: the cache is warm and then Redis loses everything.
        await asyncio.sleep(1.0)
        killed = await crash(persistent.redis)
        # Real time is the point: a short outage, the kind a pod restart is.
        await asyncio.sleep(0.5)
        back = await restart(persistent.redis)
        await settled(load, 401, back)

    answers = load.answers
    assert set(statuses(answers)) <= {200, 401, 503}, statuses(answers)
    served = [a for a in answers if a.status == 200 and a.sent >= killed + NOTICED]
    assert not served, f"{len(served)} requests served with a session Redis no longer had"
    print()
    for gate in gates:
        mine = on(answers, gate.name)
        gone = first(mine, 401, back)
        assert gone is not None
        later = [a for a in mine if a.sent >= gone.answered]
        assert {(a.status, a.reason) for a in later} == {(401, "unauthenticated")}
        browser = await ask(http, gate, holders[0], BROWSER)
        assert browser.status == 302
        answers.append(browser)
        print(
            f"no persistence {gate.name}: after the kill"
            f" {statuses(a for a in mine if a.sent >= killed)},"
            f" first 401 {1000 * (gone.answered - back):.0f} ms after Redis listened again"
        )
    assert_upstream_saw_exactly_the_admitted(persistent.stack, answers, holders)
