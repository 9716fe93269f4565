"""Wiring: settings in, aiohttp application out. Nothing is created at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from authgate import assertion
from authgate.admission import Admission
from authgate.audit import AuditLog
from authgate.connection_store import CHANGED as CONNECTION_CHANGED
from authgate.connection_store import ConnectionStore, Materialiser
from authgate.connection_sync import ConnectionSync
from authgate.connections import Connections
from authgate.headers import IdentityHeaders
from authgate.metrics import Metrics
from authgate.protocols.base import ProtocolContext
from authgate.provisioning import setup as setup_provisioning
from authgate.secrets import SecretBox
from authgate.session import redis as redis_store
from authgate.session.cache import INVALIDATIONS, SessionCache
from authgate.session.cookies import CookiePolicy
from authgate.session.kv import KeyValueStore
from authgate.session.login_state import LoginStateStore
from authgate.session.memory import MemoryStore
from authgate.session.replay import ReplayCache
from authgate.session.sessions import SessionStore
from authgate.settings import Settings
from authgate.status import ConnectionStatus
from authgate.upstream import Upstream, create_client
from authgate.urls import PublicPaths, RedirectPolicy
from authgate.users import UserStore
from authgate.web import (
    admin,
    admin_ui,
    forward_auth,
    health,
    own_paths,
    proxy,
    setup_links,
    signin,
)
from authgate.web.client_info import TrustedProxies
from authgate.web.fastpath import Front
from authgate.web.listener import ConnectionHandlers
from authgate.web.middlewares import error_pages, request_context
from authgate.web.oidc import routes as oidc_routes
from authgate.web.pages import Pages
from authgate.web.saml import routes as saml_routes
from authgate.web.state import STATE, State

log = logging.getLogger("authgate")
KEY_RELOAD_INTERVAL = 60.0
KEY_RETRY_INTERVAL = 1.0
# How often request counts reach Prometheus (see Metrics.flush).
METRICS_FLUSH_INTERVAL = 1.0
IDP_TIMEOUT = 30.0
# Requests still running at shutdown get this long to finish.
SHUTDOWN_TIMEOUT = 10.0
LISTENER_STOP_TIMEOUT = 5.0


def build_store(settings: Settings) -> KeyValueStore:
    if settings.session.store == "memory":
        log.warning(
            "session store is 'memory': for the demo and single-process development only;"
            " sessions are lost on restart and not shared between processes"
        )
        return MemoryStore()
    redis = settings.session.redis
    assert redis is not None
    return redis_store.RedisStore(
        redis_store.connect(redis),
        redis.key_prefix,
        replicas=redis.revocation_replicas,
        timeout=redis.timeout,
    )


def build_state(settings: Settings, kv: KeyValueStore) -> State:
    sess = settings.session
    cache = SessionCache() if sess.cache and kv.shared else None
    connections = Connections(settings.access, settings.connections)
    box = SecretBox(settings.secrets)
    sync = ConnectionSync(ConnectionStore(kv), connections, Materialiser(box))
    users = UserStore(kv)
    return State(
        settings=settings,
        kv=kv,
        sessions=SessionStore(kv, sess.lifetime, sess.idle_timeout, cache=cache),
        login_state=LoginStateStore(kv, sess.login_state_ttl),
        replay=ReplayCache(kv),
        users=users,
        admission=Admission(users, kv, settings.directory_sync),
        status=ConnectionStatus(kv),
        audit=AuditLog(settings.audit.output),
        metrics=Metrics.create(),
        headers=IdentityHeaders.from_settings(settings.headers),
        cookies=CookiePolicy.from_settings(settings),
        redirects=RedirectPolicy.build(settings.public_url, settings.access.allowed_redirect_hosts),
        public_paths=PublicPaths.build(settings.access.public_paths),
        connections=connections,
        connection_sync=sync,
        box=box,
        pages=Pages(settings.branding, settings.prefix + "/login"),
        trusted=TrustedProxies(settings.trusted_proxies),
    )


async def _load_ring(st: State) -> assertion.KeyRing:
    cfg = st.settings.headers.assertion
    if cfg.key_file is not None:
        return assertion.load_key_file(cfg.key_file)
    held = st.signer.ring if st.signer is not None else None
    return await assertion.load_or_create(st.kv, cfg.rotate_after, held)


async def _reload_keys(st: State, resync: asyncio.Event, stop: asyncio.Event) -> None:
    """Pick up a rotation made by another replica (or a replaced key file).

    Every KEY_RELOAD_INTERVAL, and at once when the store connection came back
    (`resync`): a restarted Redis may have lost the ring, and the replica that
    notices first must put the shared one back before anyone makes a new one.
    A failed reload is retried soon, not a whole interval later. Like the
    subscription it ends when `stop` is set (`resync` wakes it), never by
    cancellation, which redis-py can swallow mid-command.
    """
    wait = KEY_RELOAD_INTERVAL
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(resync.wait(), wait)
        resync.clear()
        if stop.is_set():
            return
        try:
            assert st.signer is not None
            st.signer.replace_ring(await _load_ring(st))
            wait = KEY_RELOAD_INTERVAL
        except Exception as exc:
            log.warning("could not reload the assertion signing keys (%s); keeping them", exc)
            wait = KEY_RETRY_INTERVAL


class _Invalidations:
    """The invalidation channel's subscriber: the session cache, the key ring's resync,
    and the connections changed by another replica."""

    def __init__(
        self, cache: SessionCache | None, resync: asyncio.Event, connections: ConnectionSync
    ) -> None:
        self._cache = cache
        self._resync = resync
        self._connections = connections

    def received(self, message: str) -> None:
        if message == assertion.KEYS_CHANGED:
            self._resync.set()
        elif message.startswith(CONNECTION_CHANGED):
            self._connections.received(message)
        elif self._cache is not None:
            self._cache.received(message)

    def alive(self, since: float) -> None:
        if self._cache is not None:
            self._cache.alive(since)

    def lost(self) -> None:
        if self._cache is not None:
            self._cache.lost()
        self._resync.set()
        self._connections.lost()


async def _stop_listening(listener: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Ask a store task to end; cancel it only if it does not within a few seconds."""
    stop.set()
    await asyncio.wait({listener}, timeout=LISTENER_STOP_TIMEOUT)
    if not listener.done():
        listener.cancel()


def _resources(st: State):
    async def resources(app: web.Application) -> AsyncIterator[None]:
        cfg = st.settings.headers.assertion
        if cfg.header:
            st.signer = assertion.AssertionSigner(
                await _load_ring(st), st.settings.public_url, cfg.audience, cfg.lifetime
            )
        client = create_client(st.settings.upstream)
        st.upstream = Upstream(client, st.settings.upstream, st.metrics)
        resync, stop = asyncio.Event(), asyncio.Event()
        reloader = asyncio.create_task(_reload_keys(st, resync, stop)) if cfg.header else None
        flusher = asyncio.create_task(st.metrics.flush_every(METRICS_FLUSH_INTERVAL))
        listener = None
        if st.kv.shared:
            subscriber = _Invalidations(st.sessions.cache, resync, st.connection_sync)
            listener = asyncio.create_task(st.kv.listen(INVALIDATIONS, subscriber, stop))
        yield
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        stop.set()
        resync.set()
        for task in (reloader, listener):
            if task is not None:
                await _stop_listening(task, stop)
        await st.upstream.close()
        await client.close()
        await st.kv.close()
        st.audit.close()

    return resources


def _protocols(st: State):
    """An HTTP client of its own for IdP calls, and one started engine per enabled connection."""

    async def protocols(app: web.Application) -> AsyncIterator[None]:
        http = aiohttp.ClientSession(
            headers={"User-Agent": "authgate"},
            timeout=aiohttp.ClientTimeout(total=IDP_TIMEOUT),
        )
        ctx = ProtocolContext(settings=st.settings, http=http, kv=st.kv, replay=st.replay)
        st.connections.started(ctx)
        for conn in st.settings.connections:
            await st.connections.install(st.connections.describe(conn, "file", 0, True))
        stop = asyncio.Event()
        sync = asyncio.create_task(st.connection_sync.run(stop))
        yield
        stop.set()
        st.connection_sync.lost()
        await _stop_listening(sync, stop)
        await st.connection_sync.drain()
        await st.connections.stop()
        st.connection_sync.materialiser.close()
        await http.close()

    return protocols


def create_app(
    settings: Settings, kv: KeyValueStore | None = None, force_retire: bool = False
) -> web.Application:
    st = build_state(settings, kv if kv is not None else build_store(settings))
    app = web.Application(middlewares=[request_context, error_pages], client_max_size=0)
    app[STATE] = st
    app.cleanup_ctx.append(_resources(st))
    app.cleanup_ctx.append(_protocols(st))
    p = settings.prefix
    app.router.add_get(p + "/healthz", health.healthz)
    app.router.add_get(p + "/readyz", health.readyz)
    app.router.add_route("*", p + "/auth", forward_auth.auth)
    app.router.add_get(p + "/refused", forward_auth.refused)
    app.router.add_get(p + "/userinfo", forward_auth.userinfo)
    app.router.add_get(p + "/jwks.json", forward_auth.jwks)
    app.router.add_get(p + "/login", signin.login_page)
    app.router.add_route("GET", p + "/logout", signin.logout)
    app.router.add_route("POST", p + "/logout", signin.logout)
    app.router.add_routes(oidc_routes(p))
    app.router.add_routes(saml_routes(p))
    admin.setup(app, settings)
    admin_ui.add_routes(app, p + "/admin", admin.admin_only)
    setup_links.add_routes(app, p, admin.admin_only)
    setup_provisioning(app, st, force_retire)
    if not settings.prefix_shared:
        app.router.add_route("*", p + "/{tail:.*}", own_paths.before(_not_found))
    app.router.add_route("*", "/{tail:.*}", own_paths.before(proxy.handle))
    return app


async def _not_found(request: web.Request) -> web.Response:
    """An unknown path under authgate's own prefix: its 404 (page or JSON), never the app's."""
    raise web.HTTPNotFound()


def create_metrics_app(app: web.Application) -> web.Application:
    metrics = app[STATE].metrics
    return metrics_app(metrics.registry, metrics.flush)


def metrics_app(
    registry: CollectorRegistry, before: Callable[[], None] | None = None
) -> web.Application:
    """`/metrics` for one registry: one process's, or the supervisor's sum over its workers."""

    async def metrics(request: web.Request) -> web.Response:
        if before is not None:
            before()
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


@contextlib.asynccontextmanager
async def site(app: web.Application, listen: str) -> AsyncIterator[None]:
    """`app` served by aiohttp on `listen` for the duration of the block."""
    async with _running(app) as server, _listening(ConnectionHandlers(server), listen, False):
        yield


@contextlib.asynccontextmanager
async def front_site(app: web.Application, listen: str, reuse_port: bool) -> AsyncIterator[Front]:
    """The main listener: the fast path first, aiohttp for every connection it hands over."""
    async with _running(app) as server:
        front = Front(app, ConnectionHandlers(server, app[STATE].pages))
        async with _listening(front, listen, reuse_port):
            front.start()
            try:
                yield front
            finally:
                front.close_all()


@contextlib.asynccontextmanager
async def _running(app: web.Application) -> AsyncIterator[web.Server]:
    """The app started, and the aiohttp server that dispatches requests to it."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        assert runner.server is not None
        yield runner.server
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _listening(
    factory: Callable[[], asyncio.Protocol], listen: str, reuse_port: bool
) -> AsyncIterator[None]:
    """A listening socket for the block; our handlers answer even what aiohttp cannot parse."""
    host, port = split_listen(listen)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host, port, reuse_port=reuse_port or None)
    log.info("listening on %s", listen)
    try:
        yield
    finally:
        server.close()


async def serve(
    settings: Settings,
    force_retire: bool = False,
    *,
    worker: bool = False,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run until cancelled: the main site, and /metrics on its own port.

    One of several workers binds with SO_REUSEPORT next to its siblings, and
    leaves /metrics to the supervisor, which serves the sum over all of them.
    """
    app = create_app(settings, force_retire=force_retire)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(front_site(app, settings.listen, reuse_port=worker))
        if settings.metrics.enabled and not worker:
            await stack.enter_async_context(site(create_metrics_app(app), settings.metrics.listen))
        if ready is not None:
            ready()
        await asyncio.Event().wait()
