"""Fail closed: while Redis is unreachable nobody gets in, and nothing needs a restart after.

authgate runs on its own real redis-server, which the tests stop (or freeze
with SIGSTOP) mid-test and bring back on the same port. Every request that
needs the store must answer 503 `store_unavailable` (an HTML page with a
correlation id for browsers, JSON for API clients), never 200, never a 401
that nginx could treat as "anonymous, carry on", and never hang.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from authgate.app import create_app
from authgate.session.cache import LIVENESS
from authgate.settings import Settings
from authgate.web.state import STATE
from tests.conftest import cookie_header, sign_in
from tests.readiness import wait_ready
from tests.servers import RedisServer

STORE_TIMEOUT = "300ms"
# Far above the 2 x 300 ms a frozen store may cost: only there to turn a hang into a failure.
HANG_GUARD_SECONDS = 10
BROWSER = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate"}
API = {"Accept": "application/json"}


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server only this test stops and restarts (the shared one stays up)."""
    server = RedisServer().start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture
async def gate(
    aiohttp_client: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    own_redis: RedisServer,
    oidc_op: Any,
) -> TestClient:
    """authgate on `own_redis`, its connection on a reachable provider: ready until Redis goes."""
    connection = {
        "id": "corp",
        "name": "Corp",
        "type": "oidc",
        "issuer": oidc_op.issuer,
        "client_id": oidc_op.client_id,
        "client_secret": oidc_op.client_secret,
    }
    settings = settings_factory(
        session={"store": "redis", "redis": {"url": own_redis.url, "timeout": STORE_TIMEOUT}},
        connections=[connection],
    )
    client = await aiohttp_client(create_app(settings))
    await wait_ready(client)
    return client


def store_errors(gate: TestClient) -> float:
    registry = gate.app[STATE].metrics.registry
    return registry.get_sample_value("authgate_session_store_errors_total") or 0.0


async def call(gate: TestClient, method: str, path: str, **kwargs: Any) -> ClientResponse:
    """One request that must come back (with any status) instead of waiting on the store."""
    kwargs.setdefault("allow_redirects", False)
    return await asyncio.wait_for(gate.request(method, path, **kwargs), HANG_GUARD_SECONDS)


async def assert_refused_with_page(gate: TestClient, sid: str) -> None:
    resp = await call(gate, "GET", "/dashboard", headers={**BROWSER, **cookie_header(gate, sid)})
    assert resp.status == 503
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert '<code id="reason">store_unavailable</code>' in page
    cid = resp.headers["X-Request-Id"]
    assert re.search(rf'<code id="correlation-id">{re.escape(cid)}</code>', page)
    assert "Traceback" not in page and "redis" not in page.lower()


async def assert_refused_with_json(gate: TestClient, method: str, path: str, sid: str) -> None:
    resp = await call(gate, method, path, headers={**API, **cookie_header(gate, sid)})
    assert resp.status == 503, f"{method} {path}"
    body = await resp.json()
    assert body == {"error": "store_unavailable", "correlation_id": resp.headers["X-Request-Id"]}


async def assert_outage_refuses_everything(gate: TestClient, sid: str) -> None:
    """Five requests that each need the store: five 503s and five counted store errors."""
    before = store_errors(gate)
    await assert_refused_with_page(gate, sid)
    await assert_refused_with_json(gate, "GET", "/api/orders", sid)
    await assert_refused_with_json(gate, "POST", "/api/orders", sid)
    await assert_refused_with_json(gate, "GET", "/_authgate/auth", sid)
    await assert_refused_with_json(gate, "GET", "/_authgate/userinfo", sid)
    assert store_errors(gate) == before + 5

    ready = await call(gate, "GET", "/_authgate/readyz")
    assert ready.status == 503
    report = await ready.json()
    assert report["status"] == "not ready"
    assert report["checks"]["store"] == "unavailable", "details go to the log, not to callers"


async def assert_serving(gate: TestClient, sid: str) -> None:
    ready = await call(gate, "GET", "/_authgate/readyz")
    assert ready.status == 200, await ready.text()
    assert (await ready.json())["checks"]["store"] == "ok"
    resp = await call(gate, "GET", "/dashboard", headers={**API, **cookie_header(gate, sid)})
    assert resp.status == 200
    assert dict((await resp.json())["headers"])["X-User"] == "alice@example.com"
    auth = await call(gate, "GET", "/_authgate/auth", headers=cookie_header(gate, sid))
    assert auth.status == 200
    assert auth.headers["X-User"] == "alice@example.com"


async def test_stopped_redis_fails_closed_and_recovers_on_restart(
    gate: TestClient, own_redis: RedisServer
) -> None:
    session = await sign_in(gate)
    await assert_serving(gate, session.id)

    own_redis.stop()
    await assert_outage_refuses_everything(gate, session.id)

    own_redis.start()
    ready = await call(gate, "GET", "/_authgate/readyz")
    assert ready.status == 200, "the first probe after the restart already succeeds"
    lost = await call(gate, "GET", "/dashboard", headers={**API, **cookie_header(gate, session.id)})
    assert lost.status == 401, "the restarted Redis lost the session: sign in again"
    fresh = await sign_in(gate)
    await assert_serving(gate, fresh.id)


async def test_frozen_redis_times_out_into_503_instead_of_hanging(
    gate: TestClient, own_redis: RedisServer
) -> None:
    """SIGSTOP keeps the port open but never answers: only the socket timeout saves us."""
    session = await sign_in(gate)
    await assert_serving(gate, session.id)
    assert own_redis.proc is not None

    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        # A frozen store breaks no connection: the session cache notices the missing
        # heartbeat answers within LIVENESS, and from then on serves nothing.
        await asyncio.sleep(LIVENESS)
        await assert_outage_refuses_everything(gate, session.id)
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)

    await assert_serving(gate, session.id)


async def test_no_cookie_during_an_outage_is_still_a_challenge(
    gate: TestClient, own_redis: RedisServer
) -> None:
    """No cookie, nothing to look up: anonymous callers are challenged, never let in."""
    own_redis.stop()
    api = await call(gate, "GET", "/api/orders", headers=API)
    assert api.status == 401
    browser = await call(gate, "GET", "/dashboard", headers=BROWSER)
    assert browser.status == 302
    assert browser.headers["Location"].startswith("/_authgate/login?rd=")
    auth = await call(gate, "GET", "/_authgate/auth")
    assert auth.status == 401
