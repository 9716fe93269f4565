"""Real `authgate run` processes on a real Redis, driven by a steady stream of requests.

The fault tests break Redis under two authgate processes and judge every
request: each one's status, reason, timing, and whether it reached the
upstream. The upstream is the echo app of `tests/upstream_app.py` that also
records the path of every request it received, so a refused request is seen
not to have gone through and an admitted one to carry the right user.
Sessions are written with `SessionStore` against the same Redis, as a login on
either process would write them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import ClientError, ClientSession, ClientTimeout, web

from authgate.identity import Identity
from authgate.session.kv import KeyValueStore
from authgate.session.sessions import Session, SessionStore
from authgate.users import User, UserStore
from tests.servers import RedisSentinel, RedisServer, free_port
from tests.upstream_app import create_upstream

ROOT = Path(__file__).resolve().parents[2]
AUTHGATE = Path(sys.executable).with_name("authgate")
LIFETIME = 3600.0
IDLE = 10.0
STORE_TIMEOUT = 1.0
ADMIN_TOKEN = secrets.token_urlsafe(32)
API = {"Accept": "application/json"}
BROWSER = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
COUNTED_UPSTREAM_MAIN = (
    "import sys; from aiohttp import web; from tests.faults.harness import counted_upstream; "
    "web.run_app(counted_upstream(), host='127.0.0.1', port=int(sys.argv[1]), print=None)"
)
# Persistence as README advises it: every write on disk before Redis answers it.
AOF = ("--appendonly", "yes", "--appendfsync", "always")
# Far above what any request may take while Redis is frozen: turns a hang into a failure.
HANG_GUARD = 10.0
FAULT_PATHS = "/app/fault/"
HITS = "/__faults/hits"
REASON = "X-Authgate-Reason"


class Process:
    """A subprocess logging to a file; `stop` always ends it, by its own pid."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, port: int) -> None:
        self.name = name
        self.argv = argv
        self.log = log_dir / f"{name}.log"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()}")
            if self._answers(path):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log.read_text()}")

    def rss_kib(self) -> int:
        """Resident memory now (VmRSS of /proc/<pid>/status), in KiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1))

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def write_config(
    path: Path,
    port: int,
    upstream: str,
    redis: str | dict[str, Any],
    store_timeout: float = STORE_TIMEOUT,
    idle: float = IDLE,
) -> None:
    """One process's config; `redis` is a URL or the `session.redis` mapping (Sentinel)."""
    where = {"url": redis} if isinstance(redis, str) else redis
    config = {
        "listen": f"127.0.0.1:{port}",
        "public_url": "http://authgate.test",
        "upstream": {"url": upstream},
        "session": {
            "store": "redis",
            "redis": {**where, "timeout": f"{1000 * store_timeout:.0f}ms"},
            "lifetime": f"{LIFETIME:.0f}s",
            "idle_timeout": f"{idle:.0f}s",
        },
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "admin": {"token": ADMIN_TOKEN},
    }
    path.write_text(yaml.safe_dump(config))


async def new_user(kv: KeyValueStore) -> User:
    """A JIT user as a login would leave it; a fresh one per test keeps tests independent."""
    subject = secrets.token_hex(4)
    identity = Identity(
        connection="corp",
        subject=subject,
        email=f"user-{subject}@example.com",
        email_verified=True,
        name="Shared User",
        groups=("Engineering",),
    )
    return await UserStore(kv).admit(identity, "jit")


async def new_session(
    kv: KeyValueStore,
    user: User,
    written_ago: float = 0.0,
    ends_at: float = 0.0,
    idle: float = IDLE,
) -> Session:
    """A session as a login on either process writes it, dated `written_ago` back, capped at
    `ends_at` (as an IdP's SessionNotOnOrAfter caps it)."""
    store = SessionStore(kv, LIFETIME, idle, clock=lambda: time.time() - written_ago)
    return await store.create(
        Session(
            user_id=user.id,
            connection="corp",
            subject="s",
            username=user.email or user.id,
            email=user.email,
            name="Shared User",
            groups=("Engineering",),
            roles=("viewer",),
            created_at=0,
            last_seen=0,
            expires_at=ends_at,
        )
    )


# -- the upstream that remembers what reached it ------------------------------------------


def counted_upstream() -> web.Application:
    """The echo upstream; every path under FAULT_PATHS it served is listed at HITS."""
    app = create_upstream()
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == HITS:
            return web.json_response(seen)
        if request.path.startswith(FAULT_PATHS):
            seen.append(request.path)
        return await handler(request)

    app.middlewares.append(record)
    return app


# -- a stack: the upstream and two authgate processes on one Redis ----------------------


@dataclass
class Stack:
    """The running processes: the counted upstream and the authgate processes in front."""

    upstream: Process
    gates: list[Process]

    def hits(self) -> list[str]:
        """Every FAULT_PATHS path the upstream received, in order."""
        with urllib.request.urlopen(self.upstream.url + HITS, timeout=5) as resp:
            return json.loads(resp.read())

    def readyz(self) -> list[int]:
        """Each process's /readyz status now."""
        statuses = []
        for gate in self.gates:
            try:
                with urllib.request.urlopen(gate.url + "/_authgate/readyz", timeout=5) as r:
                    statuses.append(r.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        return statuses

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Seconds until every process answered /readyz 200."""
        started = time.monotonic()
        while self.readyz() != [200] * len(self.gates):
            assert time.monotonic() - started < timeout, "a process stays not ready"
            time.sleep(0.05)
        return time.monotonic() - started


@contextlib.contextmanager
def stack(
    work: Path,
    redis: str | dict[str, Any],
    store_timeout: float = STORE_TIMEOUT,
    idle: float = IDLE,
) -> Iterator[Stack]:
    """Two `authgate run` processes, `a` and `b`, on `redis`; behind them the counted
    upstream."""
    port = free_port()
    upstream = Process(
        "upstream", [sys.executable, "-c", COUNTED_UPSTREAM_MAIN, str(port)], work, port
    )
    gates = []
    for name in ("a", "b"):
        port = free_port()
        write_config(work / f"{name}.yaml", port, upstream.url, redis, store_timeout, idle)
        argv = [str(AUTHGATE), "run", "--config", str(work / f"{name}.yaml")]
        gates.append(Process(name, argv, work, port))
    try:
        for process in (upstream, *gates):
            process.start()
        upstream.wait_ready("/")
        for gate in gates:
            gate.wait_ready("/_authgate/readyz")
        yield Stack(upstream, gates)
    finally:
        for process in (*gates, upstream):
            process.stop()


def sentinel_config(servers: RedisSentinel) -> dict[str, Any]:
    return {"sentinel": {"master": servers.master_name, "nodes": servers.nodes}}


def freeze(server: RedisServer) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)


def thaw(server: RedisServer) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGCONT)


async def crash(server: RedisServer) -> float:
    """SIGKILL Redis; the moment the signal went. Reaping it can take a while, so that
    happens off the event loop: the load must go on meanwhile."""
    killed = time.monotonic()
    await asyncio.to_thread(server.kill)
    return killed


async def restart(server: RedisServer, persistence: tuple[str, ...] = ()) -> float:
    """Start a killed Redis again on its port (off the event loop); the moment it listened."""
    server.extra = persistence
    await asyncio.to_thread(server.start)
    return time.monotonic()


# -- requests and what became of them -----------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request: who sent it with which session, when, and what came back."""

    gate: str
    label: str
    path: str
    sent: float
    answered: float
    status: int
    reason: str | None
    user: str | None

    @property
    def took(self) -> float:
        return self.answered - self.sent


@dataclass(frozen=True)
class Holder:
    """A session and the user it belongs to; `label` names it in the request paths."""

    label: str
    sid: str
    email: str | None


async def ask(
    http: ClientSession,
    gate: Process,
    holder: Holder,
    headers: dict[str, str] = API,
    path: str | None = None,
) -> Answer:
    """One proxied GET with `holder`'s cookie; a transport failure is status 0. The reason
    of a 302 is where it sends the browser (without the query)."""
    path = path or f"{FAULT_PATHS}{gate.name}/{holder.label}/{secrets.token_hex(6)}"
    sent = time.monotonic()
    status, reason, user = 0, None, None
    cookie = {"Cookie": f"authgate={holder.sid}"}
    try:
        async with http.get(
            gate.url + path,
            headers={**headers, **cookie},
            allow_redirects=False,
            timeout=ClientTimeout(total=HANG_GUARD),
        ) as resp:
            status, reason = resp.status, resp.headers.get(REASON)
            if status == 302:
                reason = resp.headers.get("Location", "").partition("?")[0]
            if status == 200 and path.startswith(FAULT_PATHS):
                user = dict((await resp.json())["headers"]).get("X-User")
            else:
                await resp.read()
    except (ClientError, TimeoutError) as exc:
        reason = type(exc).__name__
    return Answer(gate.name, holder.label, path, sent, time.monotonic(), status, reason, user)


async def readyz(http: ClientSession, gate: Process) -> Answer:
    """/readyz; its `reason` is what the store check said (ok, unavailable)."""
    sent = time.monotonic()
    status, reason = 0, None
    try:
        async with http.get(
            gate.url + "/_authgate/readyz", timeout=ClientTimeout(total=HANG_GUARD)
        ) as resp:
            status, reason = resp.status, (await resp.json())["checks"]["store"]
    except (ClientError, TimeoutError) as exc:
        reason = type(exc).__name__
    return Answer(gate.name, "readyz", "", sent, time.monotonic(), status, reason, None)


async def logout(http: ClientSession, gate: Process, holder: Holder) -> Answer:
    """Sign out as the app's own page would (POST, same-origin)."""
    sent = time.monotonic()
    status, reason = 0, None
    headers = {"Cookie": f"authgate={holder.sid}", "Sec-Fetch-Site": "same-origin", **API}
    try:
        async with http.post(
            gate.url + "/_authgate/logout", headers=headers, timeout=ClientTimeout(total=HANG_GUARD)
        ) as resp:
            status, reason = resp.status, resp.headers.get(REASON)
            await resp.read()
    except (ClientError, TimeoutError) as exc:
        reason = type(exc).__name__
    return Answer(gate.name, holder.label, "logout", sent, time.monotonic(), status, reason, None)


@dataclass
class Load:
    """A steady stream of requests that does not wait for answers, as independent users
    send them: one every `every` seconds to each process, cycling through `holders`, and
    a /readyz probe of each process every `ready_every` seconds. A request Redis holds up
    holds up nothing else, so every moment of a fault gets its own requests."""

    http: ClientSession
    gates: list[Process]
    holders: list[Holder]
    every: float = 0.02
    ready_every: float = 0.1
    answers: list[Answer] = field(default_factory=list)
    ready: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tickers: list[asyncio.Task[None]] = field(default_factory=list)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def _send(self, into: list[Answer], request: Awaitable[Answer]) -> None:
        async def record() -> None:
            into.append(await request)

        task = asyncio.get_running_loop().create_task(record())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _tick(self, every: float, send: Callable[[int], None]) -> None:
        turn = 0
        while not self._stop.is_set():
            send(turn)
            turn += 1
            # Real time is the point: a steady stream, not a flood of a 2-core machine.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), every)

    def _stream(self, gate: Process) -> Callable[[int], None]:
        def send(turn: int) -> None:
            holder = self.holders[turn % len(self.holders)]
            self._send(self.answers, ask(self.http, gate, holder))

        return send

    def _probe(self, gate: Process) -> Callable[[int], None]:
        return lambda _: self._send(self.ready, readyz(self.http, gate))

    async def __aenter__(self) -> Load:
        loop = asyncio.get_running_loop()
        for gate in self.gates:
            self._tickers.append(loop.create_task(self._tick(self.every, self._stream(gate))))
            self._tickers.append(loop.create_task(self._tick(self.ready_every, self._probe(gate))))
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tickers)
        await asyncio.gather(*self._pending)


def sent_within(answers: Iterable[Answer], start: float, end: float) -> list[Answer]:
    """Sent at or after `start` and answered before `end`: wholly inside the window."""
    return [a for a in answers if a.sent >= start and a.answered < end]


def first(answers: Iterable[Answer], status: int, after: float) -> Answer | None:
    """The earliest-sent answer with `status` among those sent at or after `after`."""
    return min(
        (a for a in answers if a.status == status and a.sent >= after),
        default=None,
        key=lambda a: a.sent,
    )


def statuses(answers: Iterable[Answer]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for answer in answers:
        counts[answer.status] = counts.get(answer.status, 0) + 1
    return dict(sorted(counts.items()))


def assert_upstream_saw_exactly_the_admitted(
    stack: Stack, answers: Iterable[Answer], holders: Iterable[Holder]
) -> None:
    """What reached the upstream: each 200 with its own user, nothing that was refused."""
    emails = {h.label: h.email for h in holders}
    answers = list(answers)
    admitted = {a.path for a in answers if a.status == 200}
    asked = {a.path for a in answers}
    reached = [p for p in stack.hits() if p in asked]
    assert len(reached) == len(set(reached)), "a request reached the upstream twice"
    assert set(reached) == admitted, (
        f"{len(set(reached) - admitted)} refused requests reached the upstream, "
        f"{len(admitted - set(reached))} admitted ones did not"
    )
    wrong = [a for a in answers if a.status == 200 and a.user != emails[a.label]]
    assert not wrong, f"{len(wrong)} admitted with another user than their session's"


async def settled(load: Load, status: int, after: float, within: float = 10.0) -> float:
    """Wait until every process answered `status` to a request sent after `after`, then one
    second more of steady state; the seconds the slowest process took to get there."""
    started = time.monotonic()
    while True:
        firsts = [first(on(load.answers, g.name), status, after) for g in load.gates]
        if all(firsts):
            break
        if time.monotonic() - started > within:
            since = {
                g.name: statuses(a for a in on(load.answers, g.name) if a.sent >= after)
                for g in load.gates
            }
            raise AssertionError(f"a process gives no {status} after {within}s: {since}")
        await asyncio.sleep(0.05)
    # Real time is the point: what follows the recovery must hold for a while.
    await asyncio.sleep(1.0)
    return max(a.answered for a in firsts if a) - after


def on(answers: Iterable[Answer], gate: str) -> list[Answer]:
    return [a for a in answers if a.gate == gate]
