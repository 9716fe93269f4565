from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.app import create_app
from authgate.identity import Identity
from authgate.policy import roles_for
from authgate.session.memory import MemoryStore
from authgate.session.redis import RedisStore, connect
from authgate.session.sessions import Session
from authgate.settings import RedisSettings, Settings, parse_settings
from authgate.web.state import STATE
from tests.servers import RedisServer
from tests.upstream_app import create_upstream


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


@pytest.fixture
async def upstream() -> AsyncIterator[TestServer]:
    server = TestServer(create_upstream())
    await server.start_server()
    yield server
    await server.close()


def make_settings(upstream_url: str, **overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "public_url": "https://app.example.com",
        "upstream": {"url": upstream_url},
        "session": {"store": "memory"},
        "audit": {"output": "stdout"},
        "connections": [
            {"id": "corp", "name": "Corp", "type": "oidc", "issuer": "https://idp.example.com",
             "client_id": "authgate", "client_secret": "s3cret"},
        ],
    }
    raw.update(overrides)
    return parse_settings(raw, "test.yaml")


def redis_kv(url: str) -> RedisStore:
    return RedisStore(connect(RedisSettings(url=url)), "authgate:")


@pytest.fixture
def settings_factory(upstream: TestServer) -> Callable[..., Settings]:
    return lambda **kw: make_settings(str(upstream.make_url("")).rstrip("/"), **kw)


@pytest.fixture
async def authgate(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> TestClient:
    return await aiohttp_client(create_app(settings_factory(), MemoryStore()))


async def sign_in(
    client: TestClient, identity: Identity | None = None, **session_fields: Any
) -> Session:
    """Create a session through the session API (protocols not involved) and set its cookie."""
    st = client.app[STATE]
    identity = identity or Identity(
        connection="corp", subject="sub-1", email="alice@example.com", email_verified=True,
        name="Alice Example", groups=("Engineering",),
    )
    user = await st.users.admit(identity, "jit")
    fields: dict[str, Any] = {
        "user_id": user.id, "connection": identity.connection, "subject": identity.subject,
        "username": identity.email or identity.subject, "email": identity.email,
        "name": identity.name, "groups": identity.groups,
        "roles": roles_for(identity.groups, st.rules[identity.connection]),
        "created_at": 0, "last_seen": 0, "expires_at": 0,
    }
    fields.update(session_fields)
    session = await st.sessions.create(Session(**fields))
    client.session.cookie_jar.update_cookies(
        {st.cookies.session_name: session.id}, response_url=client.make_url("/")
    )
    return session


def cookie_header(client: TestClient, sid: str) -> dict[str, str]:
    return {"Cookie": f"{client.app[STATE].cookies.session_name}={sid}"}


@pytest.fixture
def now() -> float:
    return time.time()


def app_state(app: web.Application) -> Any:
    return app[STATE]
