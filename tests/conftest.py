from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis import asyncio as aioredis

from authgate.app import create_app
from authgate.identity import Identity
from authgate.policy import roles_for
from authgate.secrets import generate_key
from authgate.session.kv import KeyValueStore
from authgate.session.memory import MemoryStore
from authgate.session.redis import RedisStore, connect
from authgate.session.sessions import Session
from authgate.settings import RedisSettings, Settings, parse_settings
from authgate.web.state import STATE
from tests.fronts import FRONTS, FrontServer
from tests.servers import RedisCluster, RedisSentinel, RedisServer, free_port
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
    """One OIDC connection `corp` whose provider is a closed loopback port, so the
    background discovery fetch fails at once instead of asking DNS for a made-up host."""
    raw: dict[str, Any] = {
        "public_url": "https://app.example.com",
        "upstream": {"url": upstream_url},
        "session": {"store": "memory"},
        "audit": {"output": "stdout"},
        "connections": [
            {
                "id": "corp",
                "name": "Corp",
                "type": "oidc",
                "issuer": f"http://127.0.0.1:{free_port()}",
                "client_id": "authgate",
                "client_secret": "s3cret",
            },
        ],
    }
    raw.update(overrides)
    return parse_settings(raw, "test.yaml")


def config_file(tmp_path: Path, redis_url: str, **extra: Any) -> Path:
    """An authgate.yaml on a real Redis, for commands run as an operator runs them."""
    path = tmp_path / "authgate.yaml"
    raw: dict[str, Any] = {
        "public_url": "https://app.example.com",
        "upstream": {"url": "http://127.0.0.1:9"},
        "session": {"store": "redis", "redis": {"url": redis_url}},
        "connections": [
            {
                "id": "corp",
                "name": "Corp",
                "type": "oidc",
                "issuer": "http://127.0.0.1:9",
                "client_id": "authgate",
                "client_secret": "s3cret-value",
            }
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def redis_kv(url: str) -> RedisStore:
    return RedisStore(connect(RedisSettings(url=url)), "authgate:")


@pytest.fixture
def master_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A master key file for `secrets.master_key_file`, and none in the environment."""
    monkeypatch.delenv("AUTHGATE_MASTER_KEY", raising=False)
    path = tmp_path / "master.key"
    path.write_text(generate_key())
    return path


@pytest.fixture
def settings_factory(upstream: TestServer) -> Callable[..., Settings]:
    return lambda **kw: make_settings(str(upstream.make_url("")).rstrip("/"), **kw)


@pytest.fixture
async def authgate(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> TestClient:
    return await aiohttp_client(create_app(settings_factory(), MemoryStore()))


@pytest.fixture(params=FRONTS)
def serve(
    request: pytest.FixtureRequest, aiohttp_client: Callable[..., Any]
) -> Callable[[web.Application], Awaitable[TestClient]]:
    """Parametrises a test over both front ends of the production listener (tests/fronts.py)."""
    fast = request.param == "fast-path"
    return lambda app: aiohttp_client(FrontServer(app, fast=fast))


async def sign_in(
    client: TestClient, identity: Identity | None = None, **session_fields: Any
) -> Session:
    """Create a session through the session API (protocols not involved) and set its cookie."""
    st = client.app[STATE]
    identity = identity or Identity(
        connection="corp",
        subject="sub-1",
        email="alice@example.com",
        email_verified=True,
        name="Alice Example",
        groups=("Engineering",),
    )
    user = await st.users.admit(identity, "jit")
    fields: dict[str, Any] = {
        "user_id": user.id,
        "connection": identity.connection,
        "subject": identity.subject,
        "username": identity.email or identity.subject,
        "email": identity.email,
        "name": identity.name,
        "groups": identity.groups,
        "roles": roles_for(identity.groups, st.connections.rules(identity.connection)),
        "created_at": 0,
        "last_seen": 0,
        "expires_at": 0,
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


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    servers = RedisSentinel().start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    servers = RedisCluster().start()
    yield servers
    servers.stop()


STORE_KINDS = ("memory", "redis", "sentinel", "cluster")


class StoreBackend:
    """One store topology under test, reached through the production `connect()`.

    `client()` hands out independent clients on the same data, as separate
    replicas would hold; the memory store has only the one in-process instance.
    """

    def __init__(self, kind: str, redis: RedisSettings | None, ports: list[int]) -> None:
        self.kind = kind
        self.redis = redis
        self._ports = ports
        self._memory = MemoryStore()
        self._clients: list[KeyValueStore] = []

    def client(self) -> KeyValueStore:
        if self.redis is None:
            return self._memory
        kv = RedisStore(connect(self.redis), self.redis.key_prefix)
        self._clients.append(kv)
        return kv

    async def raw_dump(self) -> str:
        """Every key and value as stored: what a leaked backup or `redis-cli` would show."""
        if self.redis is None:
            data = self._memory._data
            return repr({k: v for k, v in list(data.items()) if self._memory._live(k)})
        lines: list[str] = []
        for port in self._ports:
            raw = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True)
            async for key in raw.scan_iter():
                kind = await raw.type(key)
                if kind == "string":
                    value: object = await raw.get(key)
                elif kind == "set":
                    value = sorted(await raw.smembers(key))
                else:
                    value = await raw.hgetall(key)
                lines.append(f"{key} = {value}")
            await raw.aclose()
        return "\n".join(lines)

    async def close(self) -> None:
        for kv in self._clients:
            await kv.close()
        await self._memory.close()


def _store_servers(request: pytest.FixtureRequest, kind: str) -> tuple[RedisSettings, list[int]]:
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return RedisSettings(url=server.url), [server.port]
    if kind == "sentinel":
        sentinel: RedisSentinel = request.getfixturevalue("redis_sentinel")
        sentinel.flush()
        settings = {"master": sentinel.master_name, "nodes": sentinel.nodes}
        return RedisSettings(sentinel=settings), [sentinel.master.port]
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return RedisSettings(cluster_nodes=cluster.nodes), [s.port for s in cluster.servers]


@pytest.fixture(params=STORE_KINDS)
async def store_backend(request: pytest.FixtureRequest) -> AsyncIterator[StoreBackend]:
    """Parametrises a test over every KeyValueStore topology (memory, Redis x3)."""
    kind: str = request.param
    if kind == "memory":
        backend = StoreBackend(kind, None, [])
    else:
        backend = StoreBackend(kind, *_store_servers(request, kind))
    yield backend
    await backend.close()


@pytest.fixture
async def oidc_op() -> AsyncIterator[Any]:
    """The tamperable test OpenID Provider (tests/oidc_op.py) on a loopback port."""
    from tests.oidc_op import TestOP

    provider = await TestOP().start()
    yield provider
    await provider.stop()


UPSTREAM_HITS: web.AppKey[list[str]] = web.AppKey("upstream_hits", list)


@pytest.fixture
async def counted_upstream() -> AsyncIterator[TestServer]:
    """The echo upstream, recording every request path in `server.app[UPSTREAM_HITS]`."""
    app = create_upstream()
    hits: list[str] = []

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        hits.append(request.path)
        return await handler(request)

    app.middlewares.append(count)
    app[UPSTREAM_HITS] = hits
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def oidc_gate(
    aiohttp_client: Callable[..., Any], oidc_op: Any, counted_upstream: TestServer, redis_url: str
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: authgate (Redis store) with connection `corp` to `oidc_op`, driven by a Browser."""
    from tests.oidc_op import Browser, gate_settings

    browsers: list[Browser] = []
    upstream_url = str(counted_upstream.make_url("")).rstrip("/")

    async def make(top: dict[str, Any] | None = None, **conn: Any) -> Browser:
        settings = gate_settings(oidc_op, upstream_url, redis_url, top, **conn)
        browser = Browser(await aiohttp_client(create_app(settings)))
        browsers.append(browser)
        return browser

    yield make
    for browser in browsers:
        await browser.close()


@pytest.fixture(scope="session")
def saml_idp() -> Any:
    """The tamperable test SAML IdP (tests/saml_idp.py); one key pair for the whole run."""
    from tests.saml_idp import TestIdp

    return TestIdp()


@pytest.fixture(scope="session")
def sp_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An SP key pair on disk, as `authgate keys generate` writes it."""
    from authgate.keys import write_pair

    folder = tmp_path_factory.mktemp("sp-keys")
    key_file, cert_file = folder / "sp.key", folder / "sp.crt"
    write_pair(key_file, cert_file, "authgate-test-sp", bits=2048)
    return {"key_file": str(key_file), "cert_file": str(cert_file)}


@pytest.fixture(scope="session")
def keycloak(sp_keys: dict[str, Any]) -> Iterator[Any]:
    """Keycloak (tests/keycloak.py), started once per session, trusting `sp_keys`."""
    from tests.keycloak import Keycloak

    server = Keycloak(Path(sp_keys["cert_file"]).read_bytes()).start()
    yield server
    server.stop()


@pytest.fixture
async def saml_gate(
    aiohttp_client: Callable[..., Any],
    saml_idp: Any,
    counted_upstream: TestServer,
    redis_url: str,
    tmp_path: Any,
) -> Callable[..., Any]:
    """Factory: authgate (Redis store) with SAML connection `corp` trusting `saml_idp`.

    Every call is one more authgate instance on the same Redis, like a replica.
    """
    from tests.saml_gate import SamlBrowser, saml_settings

    metadata_file = tmp_path / "idp-metadata.xml"
    metadata_file.write_bytes(saml_idp.metadata())
    upstream_url = str(counted_upstream.make_url("")).rstrip("/")

    async def make(top: dict[str, Any] | None = None, **conn: Any) -> SamlBrowser:
        settings = saml_settings(upstream_url, metadata_file, redis_url, top, **conn)
        return SamlBrowser(await aiohttp_client(create_app(settings)))

    return make
