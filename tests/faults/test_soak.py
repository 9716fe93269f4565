"""A soak: sessions made, used and logged out on two processes while Redis restarts.

For AUTHGATE_SOAK_SECONDS (45 s in the suite, `bench/soak.sh` runs it for five
minutes and longer) sessions are written with `SessionStore` as logins would
write them, proxied requests (API and browser) go to either process with
them, people log out through `/_authgate/logout` on either process, and Redis
(AOF, `appendfsync always`) is killed or stopped and started again every
AUTHGATE_SOAK_RESTART_SECONDS. Every request must be answered 200, 401, 302
or 503; no session is served after its logout answered, on either process;
the upstream received exactly the requests answered 200. The figures printed:
requests and logouts by status, 503s outside the outages, and the resident
memory of each authgate process before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import ClientSession, DummyCookieJar

from authgate.errors import StoreUnavailable
from authgate.session.redis import RedisStore, connect
from authgate.settings import RedisSettings
from tests.faults.harness import (
    AOF,
    API,
    BROWSER,
    Answer,
    Holder,
    Process,
    Stack,
    ask,
    assert_upstream_saw_exactly_the_admitted,
    logout,
    new_session,
    new_user,
    restart,
    stack,
    statuses,
)
from tests.servers import RedisServer

SECONDS = float(os.environ.get("AUTHGATE_SOAK_SECONDS", "45"))
RESTART_EVERY = float(os.environ.get("AUTHGATE_SOAK_RESTART_SECONDS", "15"))
DOWN = 1.0
REQUEST_EVERY = 0.01
LOGOUT_EVERY = 0.5
SESSION_EVERY = 0.2
IN_USE = 40
# A request sent this long after Redis listened again is past the outage.
RECOVERY = 2.0


@dataclass
class Soaked:
    redis: RedisServer
    stack: Stack


@pytest.fixture(scope="module")
def soaked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soaked]:
    redis = RedisServer(extra=AOF).start()
    try:
        with stack(tmp_path_factory.mktemp("soak"), redis.url) as running:
            yield Soaked(redis, running)
    finally:
        redis.stop()


@pytest.fixture
async def kv(soaked: Soaked) -> AsyncIterator[RedisStore]:
    store = RedisStore(connect(RedisSettings(url=soaked.redis.url)), "authgate:")
    yield store
    await store.close()


@dataclass
class Soak:
    """The people, the requests and the outages of one soak, and what became of them."""

    http: ClientSession
    kv: RedisStore
    redis: RedisServer
    gates: list[Process]
    rng: random.Random = field(default_factory=lambda: random.Random(13))
    holders: dict[str, Holder] = field(default_factory=dict)
    in_use: list[Holder] = field(default_factory=list)
    left: list[Holder] = field(default_factory=list)
    logged_out: dict[str, float] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    logouts: list[Answer] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _every(self, seconds: float, until: float, act: Callable[[], None]) -> None:
        while time.monotonic() < until:
            act()
            # Real time is the point: a steady mix of people, not a flood.
            await asyncio.sleep(seconds)

    def _sign_in(self) -> None:
        async def sign_in() -> None:
            with contextlib.suppress(StoreUnavailable):
                user = await new_user(self.kv)
                session = await new_session(self.kv, user)
                holder = Holder(f"s{len(self.holders)}", session.id, user.email)
                self.holders[holder.label] = holder
                self.in_use.append(holder)
                del self.in_use[:-IN_USE]

        self._spawn(sign_in())

    def _request(self) -> None:
        # Mostly sessions in use, some logged out ones: those must stay refused.
        pool = self.left if self.left and self.rng.random() < 0.2 else self.in_use
        if not pool:
            return
        holder = self.rng.choice(pool)
        gate = self.rng.choice(self.gates)
        headers = BROWSER if self.rng.random() < 0.2 else API

        async def request() -> None:
            self.answers.append(await ask(self.http, gate, holder, headers))

        self._spawn(request())

    def _logout(self) -> None:
        if not self.in_use:
            return
        holder = self.in_use.pop(self.rng.randrange(len(self.in_use)))
        gate = self.rng.choice(self.gates)

        async def leave() -> None:
            answer = await logout(self.http, gate, holder)
            self.logouts.append(answer)
            # A logout that failed (503) promised nothing: that session is not asked again.
            if answer.status == 200:
                self.logged_out[holder.label] = answer.answered
                self.left.append(holder)

        self._spawn(leave())

    async def _outages(self, until: float) -> None:
        kill = True
        while time.monotonic() + RESTART_EVERY < until:
            # Real time is the point: Redis restarts on a schedule.
            await asyncio.sleep(RESTART_EVERY - DOWN)
            started = time.monotonic()
            await asyncio.to_thread(self.redis.kill if kill else self.redis.stop)
            kill = not kill
            await asyncio.sleep(DOWN)
            self.outages.append((started, await restart(self.redis, AOF)))

    async def run(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(
            self._every(SESSION_EVERY, until, self._sign_in),
            self._every(REQUEST_EVERY, until, self._request),
            self._every(LOGOUT_EVERY, until, self._logout),
            self._outages(until),
        )
        while self._pending:
            await asyncio.gather(*self._pending)

    def in_outage(self, answer: Answer) -> bool:
        return any(down <= answer.sent < up + RECOVERY for down, up in self.outages)


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


async def test_a_soak_with_redis_restarts_serves_no_logged_out_session(
    soaked: Soaked, kv: RedisStore
):
    gates = soaked.stack.gates
    async with ClientSession(cookie_jar=DummyCookieJar()) as http:
        soak = Soak(http, kv, soaked.redis, gates)
        # Warm up first: the memory figure is growth under load, not start-up.
        await soak.run(2.0)
        before = {gate.name: gate.rss_kib() for gate in gates}
        started = time.monotonic()
        await soak.run(SECONDS)
        took = time.monotonic() - started
        after = {gate.name: gate.rss_kib() for gate in gates}
        await asyncio.to_thread(soaked.stack.wait_ready)
        user = await new_user(kv)
        fresh = Holder("fresh", (await new_session(kv, user)).id, user.email)
        last = [await ask(http, gate, fresh) for gate in gates]

    answers = soak.answers
    stale = [
        a for a in answers if a.status == 200 and a.sent >= soak.logged_out.get(a.label, math.inf)
    ]
    outside = [a for a in answers if a.status == 503 and not soak.in_outage(a)]
    leaving = {a.label: a.sent for a in soak.logouts}
    lost = [
        a for a in answers if a.status in (401, 302) and a.answered < leaving.get(a.label, math.inf)
    ]
    print(
        f"\nsoak {took:.0f} s: {len(soak.outages)} Redis restarts, {len(soak.holders)} sessions,"
        f" {len(answers)} requests {statuses(answers)}, logouts {statuses(soak.logouts)},"
        f" {len(stale)} logged-out sessions served, {len(lost)} refusals of sessions nobody"
        f" logged out, {len(outside)} 503s outside the outages (sent more than"
        f" {RECOVERY:.0f} s after Redis listened again)"
    )
    for gate in gates:
        growth = after[gate.name] - before[gate.name]
        print(
            f"soak {gate.name}: RSS {mib(before[gate.name])} -> {mib(after[gate.name])}"
            f" ({'+' if growth >= 0 else ''}{mib(growth)})"
        )
    allowed = {
        (200, None),
        (401, "unauthenticated"),
        (302, "/_authgate/login"),
        (503, "store_unavailable"),
    }
    assert {(a.status, a.reason) for a in answers} <= allowed, statuses(answers)
    assert {(a.status, a.reason) for a in soak.logouts} <= {(200, None), (503, "store_unavailable")}
    assert not stale, f"{len(stale)} requests served a session after its logout answered"
    assert not lost, f"{len(lost)} requests refused a session that nobody logged out"
    assert [a.status for a in last] == [200] * len(gates)
    holders = [*soak.holders.values(), fresh]
    assert_upstream_saw_exactly_the_admitted(soaked.stack, [*answers, *last], holders)
