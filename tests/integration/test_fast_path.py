"""The fast path (web/fastpath.py) against aiohttp's path, over the real listener and raw sockets.

Every request goes to the listener `authgate run` uses. A request the fast
path takes must reach the upstream exactly as aiohttp's path would send it;
anything unusual must be handed to aiohttp (which then answers it as it
always did), never half-served. Each test checks which of the two answered:
`front.served` counts the fast path, aiohttp's server counts the rest. The
same request is sent to aiohttp's path by adding a Connection token naming a
header that is not there, which changes nothing the upstream sees.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from authgate.app import create_app, front_site
from authgate.identity import Identity
from authgate.policy import roles_for
from authgate.session.memory import MemoryStore
from authgate.session.sessions import Session
from authgate.settings import Settings
from authgate.web import fastpath
from authgate.web.fastpath import Front
from authgate.web.state import STATE, State
from tests.rawhttp import Raw, read_response
from tests.servers import RedisServer, free_port

SLOW = ("Connection", "keep-alive, x-not-sent")
SPOOFED = "spoofed-by-client"


def request(
    target: str,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    method: str = "GET",
    body: bytes = b"",
    version: str = "1.1",
) -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: app.example.com", *map(": ".join, headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Gate:
    front: Front
    port: int

    @property
    def st(self) -> State:
        return self.front.st

    @property
    def handed_over(self) -> int:
        return self.front.handover.server.requests_count

    async def send(self, data: bytes, methods: tuple[str, ...] = ("GET",)) -> list[Raw]:
        """Write `data` on one connection; read one response per method given."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            return [await read_response(reader, m) for m in methods]
        finally:
            writer.close()

    async def get(self, target: str, headers: list[tuple[str, str]], **kw: Any) -> Raw:
        method = kw.get("method", "GET")
        return (await self.send(request(target, headers, **kw), (method,)))[0]

    async def fast(self, target: str, headers: list[tuple[str, str]], **kw: Any) -> Raw:
        """The request, which the fast path must answer itself."""
        served, slow = self.front.served, self.handed_over
        resp = await self.get(target, headers, **kw)
        assert (self.front.served, self.handed_over) == (served + 1, slow), "not the fast path"
        return resp

    async def slow(self, target: str, headers: list[tuple[str, str]], **kw: Any) -> Raw:
        """The request, which the fast path must hand to aiohttp untouched."""
        served, slow = self.front.served, self.handed_over
        resp = await self.get(target, headers, **kw)
        assert self.front.served == served, "the fast path answered"
        assert self.handed_over >= slow + 1, "aiohttp did not answer"
        return resp


async def new_session(st: State, **fields: Any) -> Session:
    identity = Identity(
        connection="corp",
        subject="sub-1",
        email="alice@example.com",
        email_verified=True,
        name="Alice Example",
        groups=("Engineering",),
    )
    user = await st.users.admit(identity, "jit")
    values: dict[str, Any] = {
        "user_id": user.id,
        "connection": "corp",
        "subject": "sub-1",
        "username": "alice@example.com",
        "email": "alice@example.com",
        "name": "Alice Example",
        "groups": identity.groups,
        "roles": roles_for(identity.groups, st.connections.rules("corp")),
        "created_at": 0,
        "last_seen": 0,
        "expires_at": 0,
        **fields,
    }
    return await st.sessions.create(Session(**values))


def cookie(st: State, session: Session) -> tuple[str, str]:
    return ("Cookie", f"{st.cookies.session_name}={session.id}")


@pytest.fixture
async def gate_factory(
    settings_factory: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Any]]:
    stack = contextlib.AsyncExitStack()

    async def start(**overrides: Any) -> Gate:
        settings = settings_factory(**overrides)
        memory = settings.session.store == "memory"
        app = create_app(settings, MemoryStore() if memory else None)
        port = free_port()
        front = await stack.enter_async_context(front_site(app, f"127.0.0.1:{port}", False))
        return Gate(front, port)

    yield start
    await stack.aclose()


@pytest.fixture
async def gate(gate_factory: Callable[..., Any]) -> Gate:
    return await gate_factory()


def without_request_id(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() != "x-request-id"]


# -- the same requests, the same results -----------------------------------------------------


async def test_signed_in_page_reaches_upstream_exactly_as_through_aiohttp(gate: Gate):
    session = await new_session(gate.st)
    headers = [
        cookie(gate.st, session),
        ("Accept", "text/html"),
        ("X-Request-Id", "req-1"),
        ("X-App", "kept"),
    ]
    fast = await gate.fast("/app/page?q=1&x=%20", headers)
    slow = await gate.slow("/app/page?q=1&x=%20", [*headers, SLOW])
    assert fast.status == slow.status == 200
    assert fast.upstream_headers() == slow.upstream_headers()
    assert fast.comparable() == slow.comparable()
    seen = fast.seen()
    assert seen["X-User"] == "alice@example.com"
    assert seen["X-Request-Id"] == "req-1"
    assert "Cookie" not in seen
    assert json.loads(fast.body)["raw_path"] == "/app/page?q=1&x=%20"
    assert fast.headers["X-Upstream"] == "echo"
    assert "X-Hop" not in fast.headers
    assert fast.headers["X-Request-Id"] == "req-1"


async def test_forward_auth_answers_as_aiohttp_does(gate: Gate):
    session = await new_session(gate.st)
    headers = [cookie(gate.st, session), ("X-Original-URI", "/reports"), ("X-Request-Id", "r-2")]
    fast = await gate.fast("/_authgate/auth?allowed_groups=Engineering", headers)
    slow = await gate.slow("/_authgate/auth?allowed_groups=Engineering", [*headers, SLOW])
    assert fast.status == slow.status == 200
    assert fast.comparable() == slow.comparable()
    assert fast.headers["X-Request-Id"] == "r-2"


async def test_head_has_the_upstream_length_and_no_body(gate: Gate):
    session = await new_session(gate.st)
    fast = await gate.fast("/anything", [cookie(gate.st, session)], method="HEAD")
    slow = await gate.slow("/anything", [cookie(gate.st, session), SLOW], method="HEAD")
    assert fast.status == slow.status == 200
    assert fast.headers["Content-Length"] == slow.headers["Content-Length"]
    assert fast.body == b""


async def test_streamed_download_arrives_whole(gate: Gate):
    session = await new_session(gate.st)
    size = 3 * 1024 * 1024 + 7
    resp = await gate.fast(f"/__download/{size}", [cookie(gate.st, session)])
    assert resp.status == 200
    assert resp.body == b"x" * size
    chunked = await gate.fast("/__hop", [cookie(gate.st, session)])
    assert chunked.body == b"hop-by-hop body"
    assert "X-Hop-Named" not in chunked.headers
    assert chunked.headers["X-End-To-End"] == "kept"


async def test_pipelined_requests_are_answered_in_order(gate: Gate):
    alice = await new_session(gate.st)
    bob = await new_session(gate.st, user_id="u-bob", username="bob@example.com", email=None)
    data = request("/one", [cookie(gate.st, alice)]) + request("/two", [cookie(gate.st, bob)])
    first, second = await gate.send(data, ("GET", "GET"))
    assert json.loads(first.body)["raw_path"] == "/one"
    assert first.seen()["X-User"] == "alice@example.com"
    assert json.loads(second.body)["raw_path"] == "/two"
    assert second.seen()["X-User"] == "bob@example.com"


async def test_a_client_pipelining_far_ahead_is_paused_not_buffered(gate: Gate):
    """While a slow answer is pending, reading stops past READ_AHEAD; every request is served."""
    session = await new_session(gate.st)
    count = fastpath.READ_AHEAD // 60
    data = request("/__slow?s=0.3", [cookie(gate.st, session)]) + b"".join(
        request(f"/n{i}", [cookie(gate.st, session)]) for i in range(count)
    )
    assert len(data) > fastpath.READ_AHEAD
    answers = await gate.send(data, ("GET",) * (count + 1))
    assert answers[0].body == b"late"
    assert [json.loads(a.body)["raw_path"] for a in answers[1:]] == [f"/n{i}" for i in range(count)]


async def test_a_body_after_fast_requests_goes_to_aiohttp_intact(gate: Gate):
    session = await new_session(gate.st)
    payload = os.urandom(70_000)
    data = request("/one", [cookie(gate.st, session)]) + request(
        "/__mirror",
        [cookie(gate.st, session), ("Content-Length", str(len(payload)))],
        method="POST",
        body=payload,
    )
    served, slow = gate.front.served, gate.handed_over
    first, second = await gate.send(data, ("GET", "POST"))
    assert first.status == second.status == 200
    assert second.body == payload
    assert gate.front.served == served + 1
    assert gate.handed_over == slow + 1


# -- spoofed identity never reaches the upstream ----------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "X-User",
        "x-user",
        "X_User",
        "X-Email",
        "X-Groups",
        "X-Authgate-Assertion",
        "X-Auth-Request-User",
    ],
)
async def test_client_identity_headers_are_stripped_on_the_fast_path(gate: Gate, name: str):
    session = await new_session(gate.st)
    resp = await gate.fast("/app", [cookie(gate.st, session), (name, SPOOFED)])
    assert all(SPOOFED not in value for _, value in resp.upstream_headers())
    assert resp.seen()["X-User"] == "alice@example.com"


async def test_forwarding_headers_from_an_untrusted_client_are_replaced(
    gate_factory: Callable[..., Any],
):
    gate = await gate_factory(trusted_proxies=["10.0.0.0/8"])
    session = await new_session(gate.st)
    spoofed = [
        cookie(gate.st, session),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Request-Id", "chosen-by-attacker"),
    ]
    resp = await gate.fast("/app", spoofed)
    seen = resp.seen()
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Host"] == "app.example.com"
    assert seen["X-Request-Id"] != "chosen-by-attacker"


async def test_untrusted_caller_cannot_name_a_public_original_uri(
    gate_factory: Callable[..., Any],
):
    gate = await gate_factory(trusted_proxies=["10.0.0.0/8"], access={"public_paths": ["/public/"]})
    resp = await gate.slow(
        "/_authgate/auth", [("X-Original-URI", "/public/x"), ("Accept", "application/json")]
    )
    assert resp.status == 401


# -- anything unusual goes to aiohttp ---------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/%5Fauthgate/logout",
        "/a/../_authgate/logout",
        "/_authgate/./auth",
        "//_authgate/auth",
        "/_authgate/userinfo",
        "/_authgate",
        "/caf%C3%A9",
    ],
)
async def test_encoded_dotted_and_own_paths_go_to_aiohttp(gate: Gate, target: str):
    session = await new_session(gate.st)
    await gate.slow(target, [cookie(gate.st, session), ("Accept", "application/json")])


async def test_public_path_goes_to_aiohttp_and_carries_no_identity(
    gate_factory: Callable[..., Any],
):
    gate = await gate_factory(access={"public_paths": ["/public/"]})
    session = await new_session(gate.st)
    resp = await gate.slow("/public/page", [cookie(gate.st, session)])
    assert "X-User" not in resp.seen()


@pytest.mark.parametrize(
    "cookies",
    [
        "authgate={sid}; authgate={sid}",
        'x="a; authgate={sid}"; y=1',
        "authgate=",
        "authgate=not-a-session-id-but-well-formed",
        "other={sid}",
        "authgate={sid}!",
    ],
)
async def test_unusual_or_unknown_cookies_go_to_aiohttp(gate: Gate, cookies: str):
    session = await new_session(gate.st)
    header = ("Cookie", cookies.format(sid=session.id))
    resp = await gate.slow("/app", [header, ("Accept", "application/json")])
    assert resp.status in (200, 401)
    if resp.status == 200:
        assert resp.seen()["X-User"] == "alice@example.com"


async def test_no_cookie_is_challenged_by_aiohttp(gate: Gate):
    resp = await gate.slow("/app", [("Accept", "application/json")])
    assert resp.status == 401
    assert json.loads(resp.body)["error"] == "unauthenticated"


async def test_revoked_session_is_refused(gate: Gate):
    session = await new_session(gate.st)
    await gate.fast("/app", [cookie(gate.st, session)])
    await gate.st.sessions.delete(session)
    resp = await gate.slow("/app", [cookie(gate.st, session), ("Accept", "application/json")])
    assert resp.status == 401


async def test_session_due_for_refresh_goes_to_aiohttp(gate: Gate):
    """aiohttp's refresh step runs, and ends this session: it holds no refresh token."""
    session = await new_session(gate.st, refresh_at=time.time() - 1)
    resp = await gate.slow("/app", [cookie(gate.st, session), ("Accept", "application/json")])
    assert resp.status == 401


@pytest.mark.parametrize("target", ["/app", "/_authgate/auth"])
async def test_session_whose_refresh_is_not_due_yet_stays_on_the_fast_path(gate: Gate, target: str):
    """Every OIDC session with refresh on carries `refresh_at`; only a due one needs aiohttp."""
    session = await new_session(gate.st, refresh_at=time.time() + 600)
    for _ in range(2):
        resp = await gate.fast(target, [cookie(gate.st, session)])
        assert resp.status == 200


async def test_forward_auth_outside_the_allowed_groups_is_refused_by_aiohttp(gate: Gate):
    session = await new_session(gate.st)
    resp = await gate.slow("/_authgate/auth?allowed_groups=admins", [cookie(gate.st, session)])
    assert resp.status == 403
    assert json.loads(resp.body)["error"] == "forbidden"


@pytest.mark.parametrize(
    "extra",
    [
        [("Connection", "close")],
        [("Upgrade", "websocket")],
        [("Expect", "100-continue")],
        [("X-Twice", "a"), ("x-twice", "b")],
        [("Content-Length", "5")],
    ],
)
async def test_requests_out_of_the_ordinary_go_to_aiohttp(gate: Gate, extra: list):
    session = await new_session(gate.st)
    body = b"hello" if ("Content-Length", "5") in extra else b""
    await gate.slow("/app", [cookie(gate.st, session), *extra], body=body)


async def test_http_1_0_goes_to_aiohttp(gate: Gate):
    session = await new_session(gate.st)
    resp = await gate.slow("/app", [cookie(gate.st, session)], version="1.0")
    assert resp.status == 200


async def test_post_goes_to_aiohttp(gate: Gate):
    session = await new_session(gate.st)
    await gate.slow("/app", [cookie(gate.st, session), ("Content-Length", "0")], method="POST")


async def test_request_smuggling_is_refused_by_aiohttp_and_never_forwarded(gate: Gate):
    """CL.TE: aiohttp's parser refuses the request; the fast path never answered it."""
    session = await new_session(gate.st)
    smuggle = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    resp = await gate.slow(
        "/__mirror",
        [cookie(gate.st, session), ("Content-Length", "4"), ("Transfer-Encoding", "chunked")],
        method="POST",
        body=smuggle,
    )
    assert resp.status == 400
    assert b"smuggled" not in resp.body


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /app HTTP/1.1\nHost: x\n\n",
        b"GET /app HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /app HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        b"GET /app#frag HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://evil/app HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_malformed_heads_are_answered_by_aiohttp(gate: Gate, raw: bytes):
    session = await new_session(gate.st)
    data = raw.replace(b"Host", f"Cookie: authgate={session.id}\r\nHost".encode(), 1)
    served = gate.front.served
    (resp,) = await gate.send(data)
    assert resp.status == 400
    assert gate.front.served == served


async def test_an_oversized_head_is_left_to_aiohttp_limits(gate: Gate):
    session = await new_session(gate.st)
    resp = await gate.slow("/app", [cookie(gate.st, session), ("X-Big", "a" * 20_000)])
    assert resp.status in (400, 431)


# -- failures after the fast path took the request --------------------------------------------


async def test_upstream_down_is_a_502_with_the_usual_json(gate_factory: Callable[..., Any]):
    gate = await gate_factory(upstream={"url": f"http://127.0.0.1:{free_port()}"})
    session = await new_session(gate.st)
    resp = await gate.fast("/app", [cookie(gate.st, session), ("Accept", "application/json")])
    assert resp.status == 502
    body = json.loads(resp.body)
    assert body["error"] == "upstream_unavailable"
    assert body["correlation_id"] == resp.headers["X-Request-Id"]


async def test_upstream_down_is_a_502_page_for_browsers(gate_factory: Callable[..., Any]):
    gate = await gate_factory(upstream={"url": f"http://127.0.0.1:{free_port()}"})
    session = await new_session(gate.st)
    resp = await gate.fast("/app", [cookie(gate.st, session), ("Accept", "text/html")])
    assert resp.status == 502
    assert resp.headers["Content-Type"].startswith("text/html")
    assert b"upstream_unavailable" in resp.body
    assert b"Traceback" not in resp.body


@pytest.mark.parametrize(
    ("target", "method", "status", "reason"),
    [
        ("/_authgate/nonexistent", "GET", 404, "not_found"),
        ("/_authgate/auth", "GET", 401, "unauthenticated"),
        ("/form", "POST", 401, "unauthenticated"),
    ],
)
async def test_refusals_behind_the_front_are_pages_for_browsers(
    gate: Gate, target: str, method: str, status: int, reason: str
):
    resp = await gate.slow(target, [("Sec-Fetch-Mode", "navigate")], method=method)
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.headers["X-Authgate-Reason"] == reason
    cid = resp.headers["X-Request-Id"].encode()
    assert b'<code id="correlation-id">' + cid + b"</code>" in resp.body


async def test_slow_upstream_is_a_504(gate_factory: Callable[..., Any], upstream: TestServer):
    base = str(upstream.make_url("")).rstrip("/")
    gate = await gate_factory(upstream={"url": base, "read_timeout": "300ms"})
    session = await new_session(gate.st)
    resp = await gate.fast("/__slow?s=2", [cookie(gate.st, session)])
    assert resp.status == 504
    assert json.loads(resp.body)["error"] == "upstream_timeout"


# -- with Redis: the session cache and a store outage -------------------------------------------


@pytest.fixture
def own_redis() -> AsyncIterator[RedisServer]:
    server = RedisServer().start()
    yield server  # type: ignore[misc]
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


async def _redis_gate(gate_factory: Callable[..., Any], url: str, **overrides: Any) -> Gate:
    gate = await gate_factory(
        session={"store": "redis", "redis": {"url": url, "timeout": "300ms"}}, **overrides
    )
    assert gate.st.sessions.cache is not None
    for _ in range(100):
        if gate.st.sessions.cache.usable():
            break
        await asyncio.sleep(0.02)
    return gate


async def test_cached_session_is_refused_at_once_after_logout_elsewhere(
    gate_factory: Callable[..., Any], redis_url: str
):
    gate = await _redis_gate(gate_factory, redis_url)
    other = await _redis_gate(gate_factory, redis_url)
    session = await new_session(gate.st)
    await gate.fast("/app", [cookie(gate.st, session)])
    assert gate.st.sessions.cached(session.id) is not None
    await other.st.sessions.delete(session)
    for _ in range(100):
        if gate.st.sessions.cached(session.id) is None:
            break
        await asyncio.sleep(0.01)
    resp = await gate.slow("/app", [cookie(gate.st, session), ("Accept", "application/json")])
    assert resp.status == 401


async def test_identity_headers_follow_a_session_renewed_on_another_replica(
    gate_factory: Callable[..., Any], redis_url: str
):
    """The rendered identity lines are kept per session; a renewed session renders anew."""
    gate = await _redis_gate(gate_factory, redis_url)
    other = await _redis_gate(gate_factory, redis_url)
    session = await new_session(gate.st)
    auth = [cookie(gate.st, session), ("X-Original-URI", "/reports")]
    for _ in range(2):
        assert (await gate.fast("/app", [cookie(gate.st, session)])).seen()["X-Groups"] == (
            "Engineering"
        )
        assert (await gate.fast("/_authgate/auth", auth)).headers["X-Groups"] == "Engineering"
    assert gate.st.sessions.cached(session.id) is not None
    renewed = replace(session, groups=("Engineering", "Finance"))
    assert await other.st.sessions.update(renewed) is not None
    for _ in range(100):
        if gate.st.sessions.cached(session.id) is None:
            break
        await asyncio.sleep(0.01)
    page = await gate.fast("/app", [cookie(gate.st, session)])
    answer = await gate.fast("/_authgate/auth", auth)
    assert page.seen()["X-Groups"] == answer.headers["X-Groups"] == "Engineering,Finance"
    claims = json.loads(
        base64.urlsafe_b64decode(answer.headers["X-Authgate-Assertion"].split(".")[1] + "==")
    )
    assert claims["groups"] == ["Engineering", "Finance"]


async def test_slow_answer_on_a_kept_alive_connection_is_a_504(
    gate_factory: Callable[..., Any], upstream: TestServer, redis_url: str
):
    """A cached session's request meets an idle upstream connection: sent without a task."""
    base = str(upstream.make_url("")).rstrip("/")
    upstream_settings = {"url": base, "read_timeout": "300ms"}
    gate = await _redis_gate(gate_factory, redis_url, upstream=upstream_settings)
    session = await new_session(gate.st)
    assert (await gate.fast("/app", [cookie(gate.st, session)])).status == 200
    resp = await gate.fast("/__slow?s=2", [cookie(gate.st, session)])
    assert resp.status == 504
    assert json.loads(resp.body)["error"] == "upstream_timeout"
    again = await gate.fast("/after", [cookie(gate.st, session)])
    assert json.loads(again.body)["raw_path"] == "/after"


async def test_a_client_leaving_mid_answer_leaves_no_answer_behind(
    gate_factory: Callable[..., Any], redis_url: str
):
    """The late answer must never reach the next request on the same upstream connection."""
    gate = await _redis_gate(gate_factory, redis_url)
    session = await new_session(gate.st)
    assert (await gate.fast("/app", [cookie(gate.st, session)])).status == 200
    _, writer = await asyncio.open_connection("127.0.0.1", gate.port)
    writer.write(request("/__slow?s=0.3", [cookie(gate.st, session)]))
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await asyncio.sleep(0.5)
    for path in ("/one", "/two", "/three"):
        resp = await gate.fast(path, [cookie(gate.st, session)])
        assert resp.status == 200
        assert json.loads(resp.body)["raw_path"] == path


async def test_a_kept_alive_connection_closed_by_the_app_is_retried_once(
    gate_factory: Callable[..., Any], redis_url: str
):
    """The application closes its idle connection as the next request arrives: sent again."""
    port = free_port()
    seen: list[bytes] = []

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(answer_once, "127.0.0.1", port)
    try:
        gate = await _redis_gate(
            gate_factory, redis_url, upstream={"url": f"http://127.0.0.1:{port}"}
        )
        session = await new_session(gate.st)
        for _ in range(3):
            resp = await gate.fast("/app", [cookie(gate.st, session)])
            assert (resp.status, resp.body) == (200, b"ok")
        assert len(seen) == 5, "each request after the first met a closed connection once"
    finally:
        server.close()


async def test_store_outage_is_a_503_from_the_fast_path(
    gate_factory: Callable[..., Any], own_redis: RedisServer
):
    gate = await _redis_gate(gate_factory, own_redis.url)
    session = await new_session(gate.st)
    own_redis.stop()
    for _ in range(100):
        if not gate.st.sessions.cache.usable():  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.02)
    resp = await gate.fast("/app", [cookie(gate.st, session), ("Accept", "application/json")])
    assert resp.status == 503
    assert json.loads(resp.body)["error"] == "store_unavailable"
    page = await gate.fast("/app", [cookie(gate.st, session), ("Sec-Fetch-Mode", "navigate")])
    assert page.status == 503
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["X-Authgate-Reason"] == "store_unavailable"
    assert b'<code id="reason">store_unavailable</code>' in page.body


# -- connections ------------------------------------------------------------------------------


async def test_idle_connections_are_closed(
    gate_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastpath, "KEEPALIVE", 0.2)
    monkeypatch.setattr(fastpath, "SWEEP_EVERY", 0.1)
    gate = await gate_factory()
    session = await new_session(gate.st)
    reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
    writer.write(request("/app", [cookie(gate.st, session)]))
    assert (await read_response(reader)).status == 200
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


def test_the_app_has_no_route_outside_the_prefix_but_the_catch_all(settings_factory):
    """The fast path proxies any path outside `{prefix}/`: that must be aiohttp's choice too."""
    app = create_app(settings_factory(), MemoryStore())
    prefix = app[STATE].settings.prefix
    outside = [
        r.canonical
        for r in app.router.resources()
        if not r.canonical.startswith(prefix + "/") and r.canonical != prefix
    ]
    assert outside == ["/{tail}"]
