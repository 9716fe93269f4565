"""Two real `authgate run` processes sharing one Redis behave as one (SPEC §7).

The processes, the upstream echo app and Redis are all real subprocesses on
loopback. Sessions are written with `SessionStore` (the code the processes
run) against the same Redis and key prefix; what one process does (touch,
logout, revocation through its admin API) must show on the other at once.
Deadlines are put near "now" by writing sessions with a clock set in the
past, so the processes' own expiry checks are seen within a second of waiting.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientSession, DummyCookieJar
from joserfc import jwt
from joserfc.jwk import KeySet

from authgate.session.redis import RedisStore, connect
from authgate.settings import RedisSettings
from tests.faults.harness import (
    ADMIN_TOKEN,
    API,
    BROWSER,
    IDLE,
    new_session,
    new_user,
    stack,
)
from tests.servers import RedisServer


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


@dataclass(frozen=True)
class Deployment:
    redis_url: str
    a: str
    b: str


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    redis = RedisServer().start()
    try:
        with stack(tmp_path_factory.mktemp("two-processes"), redis.url) as running:
            a, b = running.gates
            yield Deployment(redis.url, a.url, b.url)
    finally:
        redis.stop()


@pytest.fixture
async def kv(deployment: Deployment) -> AsyncIterator[RedisStore]:
    store = RedisStore(connect(RedisSettings(url=deployment.redis_url)), "authgate:")
    yield store
    await store.close()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession(cookie_jar=DummyCookieJar()) as session:
        yield session


async def get(
    http: ClientSession, base: str, path: str, sid: str | None, headers: dict[str, str]
) -> tuple[int, Any]:
    cookie = {"Cookie": f"authgate={sid}"} if sid else {}
    async with http.get(base + path, headers={**headers, **cookie}, allow_redirects=False) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, (body, r.headers.copy())


async def proxied_user(http: ClientSession, base: str, sid: str) -> str | None:
    """The X-User the upstream received, or None when authgate did not let the request in."""
    status, (body, _) = await get(http, base, "/app/page", sid, API)
    return dict(body["headers"]).get("X-User") if status == 200 else None


async def assert_refused(http: ClientSession, base: str, sid: str) -> None:
    """Refused on the very next request: 401 for an API call, 302 to sign-in for a browser."""
    status, (body, _) = await get(http, base, "/app/page", sid, API)
    assert status == 401 and body["error"] == "unauthenticated"
    status, (_, headers) = await get(http, base, "/app/page", sid, BROWSER)
    assert status == 302
    assert headers["Location"].startswith("/_authgate/login?rd=")
    status, _ = await get(http, base, "/_authgate/auth", sid, API)
    assert status == 401


async def test_a_session_written_once_is_accepted_by_both(
    deployment: Deployment, kv: RedisStore, http: ClientSession
) -> None:
    user = await new_user(kv)
    session = await new_session(kv, user)
    for base in (deployment.a, deployment.b):
        assert await proxied_user(http, base, session.id) == user.email
        status, (_, headers) = await get(http, base, "/_authgate/auth", session.id, API)
        assert status == 200 and headers["X-User"] == user.email


async def test_logout_on_one_process_is_refused_by_the_other(
    deployment: Deployment, kv: RedisStore, http: ClientSession
) -> None:
    session = await new_session(kv, await new_user(kv))
    assert await proxied_user(http, deployment.b, session.id) is not None
    async with http.post(
        deployment.a + "/_authgate/logout",
        headers={"Cookie": f"authgate={session.id}", "Sec-Fetch-Site": "same-origin"},
    ) as resp:
        assert resp.status == 200
    await assert_refused(http, deployment.b, session.id)
    await assert_refused(http, deployment.a, session.id)


async def test_admin_revocation_on_a_ends_every_session_on_b(
    deployment: Deployment, kv: RedisStore, http: ClientSession
) -> None:
    user, bystander = await new_user(kv), await new_user(kv)
    laptop, phone = await new_session(kv, user), await new_session(kv, user)
    other = await new_session(kv, bystander)
    for sid in (laptop.id, phone.id):
        assert await proxied_user(http, deployment.b, sid) == user.email

    async with http.post(
        f"{deployment.a}/_authgate/admin/api/users/{user.id}/revoke-sessions",
        headers={**API, "Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["revoked_sessions"] == 2

    for sid in (laptop.id, phone.id):
        await assert_refused(http, deployment.b, sid)
    assert await proxied_user(http, deployment.b, other.id) == bystander.email


async def test_a_touch_on_one_process_extends_the_idle_deadline_on_the_other(
    deployment: Deployment, kv: RedisStore, http: ClientSession
) -> None:
    """Last seen IDLE - 1 s ago: only A's touch can keep it alive on B a second and more later."""
    session = await new_session(kv, await new_user(kv), written_ago=IDLE - 1.0)
    assert await proxied_user(http, deployment.a, session.id) is not None
    await asyncio.sleep(1.3)
    assert await proxied_user(http, deployment.b, session.id) is not None


async def test_idle_and_absolute_expiry_are_enforced_by_each_process(
    deployment: Deployment, kv: RedisStore, http: ClientSession
) -> None:
    """Each process refuses on its own clock, even while Redis still holds the keys.

    The ending sessions' keys are kept in Redis past their deadline, as a writer
    whose clock lags would leave them, so the refusal is the process's own check.
    """
    user = await new_user(kv)
    idle = [await new_session(kv, user, written_ago=IDLE + 1) for _ in range(2)]
    ending = [await new_session(kv, user, ends_at=time.time() + 1.0) for _ in range(2)]
    for session in ending:
        await kv.expire(f"sess:{_digest(session.id)}", 30)
    for session in (*idle, *ending):
        assert await kv.get(f"sess:{_digest(session.id)}") is not None
    for session, base in zip(idle, (deployment.a, deployment.b), strict=True):
        await assert_refused(http, base, session.id)
    for session, base in zip(ending, (deployment.a, deployment.b), strict=True):
        assert await proxied_user(http, base, session.id) is not None, "valid before the end"
    await asyncio.sleep(1.2)
    for session, base in zip(ending, (deployment.b, deployment.a), strict=True):
        assert await kv.get(f"sess:{_digest(session.id)}") is not None
        await assert_refused(http, base, session.id)
        assert await kv.get(f"sess:{_digest(session.id)}") is None, "the refusing process cleans up"


async def test_both_publish_one_signing_key_and_their_assertions_verify_with_it(
    deployment: Deployment, kv: RedisStore, http: ClientSession
) -> None:
    user = await new_user(kv)
    session = await new_session(kv, user)
    _, (jwks_a, _) = await get(http, deployment.a, "/_authgate/jwks.json", None, API)
    _, (jwks_b, _) = await get(http, deployment.b, "/_authgate/jwks.json", None, API)
    assert jwks_a == jwks_b
    assert jwks_a["keys"] and all(k["alg"] == "ES256" and "d" not in k for k in jwks_a["keys"])
    keys = KeySet.import_key_set(jwks_a)
    for base in (deployment.a, deployment.b):
        status, (body, _) = await get(http, base, "/app/page", session.id, API)
        assert status == 200
        token = dict(body["headers"])["X-Authgate-Assertion"]
        claims = jwt.decode(token, keys, algorithms=["ES256"]).claims
        assert claims["sub"] == user.id and claims["email"] == user.email
