"""Redis-backed store: standalone URL, Sentinel or Cluster, via redis.asyncio.

Every Redis exception is turned into `StoreUnavailable` at this boundary, so
callers fail closed with a 503 and never mistake an outage for "no session".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from authgate.errors import StoreUnavailable
from authgate.session.cache import LIVENESS, MARGIN
from authgate.session.kv import KeyValueStore, Subscriber
from authgate.settings import RedisSettings

log = logging.getLogger("authgate.store")

P = ParamSpec("P")
T = TypeVar("T")

# RedisClusterException ("no reachable node", "slot not covered") is not a RedisError.
_OUTAGES = (RedisError, RedisClusterException, OSError, TimeoutError)
# Operators see the detail (logs, readyz): keep the cause, drop redis-py's client reprs.
_DETAIL_CHARS = 200
# A subscription that answered no heartbeat for this many intervals is reconnected.
_SILENT_HEARTBEATS = 8
# The sorted set of replicas that may be serving from their session cache, and the
# channel suffix on which they confirm a revocation.
_REGISTRY = "replicas"
_ACKS = ":acks"
_RESUBSCRIBE_AFTER = 1.0
# One retry on a fresh connection, after at most 50 ms: enough to replace a dead one.
_RETRIES = 1
_RETRY_BASE = 0.01
_RETRY_CAP = 0.05


def _fail_closed(
    func: Callable[Concatenate[RedisStore, P], Awaitable[T]],
) -> Callable[Concatenate[RedisStore, P], Awaitable[T]]:
    @wraps(func)
    async def wrapper(store: RedisStore, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            if not store._ready:
                await store._initialise()
            return await func(store, *args, **kwargs)
        except _OUTAGES as exc:
            reason = str(exc).split("<", 1)[0].rstrip(" :")[:_DETAIL_CHARS]
            raise StoreUnavailable(detail=f"redis: {type(exc).__name__}: {reason}") from exc

    return wrapper


def _retry() -> Retry:
    """Replace a dead pooled connection unseen, then fail closed: a request must not hang.

    A connection Redis closed (restart, failover, idle `timeout`) fails its next
    command; one retry on a fresh connection hides that from the request, while
    a Redis that is really down refuses the reconnect at once, so the request
    still gets its 503 quickly. A timeout is not retried: a frozen Redis would
    otherwise cost each request several timeouts (redis-py applies the same
    retry to opening the connection), not the one `timeout` promises. It must
    be the asyncio `Retry`: the synchronous one, given to the asyncio client,
    is never called and nothing is retried.
    """
    return Retry(
        ExponentialBackoff(cap=_RETRY_CAP, base=_RETRY_BASE),
        _RETRIES,
        supported_errors=(RedisConnectionError, OSError),
    )


class _NoRetry(Retry):
    """For a subscription: the listen loop must hear of every break at once.

    redis-py's `Retry` with zero retries still reconnects (its failure
    callback) before it gives up, which costs the loop the round trips during
    which a cached session is still served after Redis went away.
    """

    async def call_with_retry(self, do: Callable[[], Awaitable[T]], *_: Any, **__: Any) -> T:
        return await do()


_NO_RETRY = _NoRetry(NoBackoff(), 0)


_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""

# A replica's registration: "I may be caching until now + ARGV[2] ms" (Redis' own clock).
_REGISTER = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# Publish, and name the replicas registered at that same instant: the ones to wait for.
_PUBLISH_TO_REGISTERED = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""

_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _quietly(task: asyncio.Task[None]) -> asyncio.Task[None]:
    """A task whose failure the awaiting code handles, or that nobody awaits any more."""
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else value or ""


def _ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def _split(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host, int(port)


def connect(settings: RedisSettings) -> Any:
    """Build the client for the configured topology; no connection is made yet."""
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "retry": _retry(),
    }
    common: dict[str, Any] = {**timeouts, "health_check_interval": 15}
    if settings.sentinel is not None:
        sentinel = Sentinel(
            [_split(n) for n in settings.sentinel.nodes],
            sentinel_kwargs={"password": settings.sentinel.sentinel_password, **timeouts},
            password=settings.sentinel.password,
            **common,
        )
        return sentinel.master_for(settings.sentinel.master)
    if settings.cluster_nodes:
        return RedisCluster(
            startup_nodes=[ClusterNode(*_split(n)) for n in settings.cluster_nodes], **common
        )
    return aioredis.Redis.from_url(settings.url, **common)


class _Awaited:
    """The confirmations of one revocation, as they arrive on the acks channel."""

    def __init__(self) -> None:
        self._heard: set[str] = set()
        self._changed = asyncio.Event()

    def heard(self, replica: str) -> None:
        self._heard.add(replica)
        self._changed.set()

    async def all_of(self, replicas: set[str], deadline: float) -> None:
        """Until each of `replicas` confirmed, or `deadline` (loop time): past it, a replica
        that stayed silent has not had a usable cache since before the message."""
        loop = asyncio.get_running_loop()
        while not replicas <= self._heard:
            left = deadline - loop.time()
            if left <= 0:
                log.warning(
                    "%d replicas did not confirm a revocation in time", len(replicas - self._heard)
                )
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)


class RedisStore(KeyValueStore):
    kind = "redis"
    shared = True

    def __init__(
        self, client: Any, prefix: str = "authgate:", replicas: int = 0, timeout: float = 2.0
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._replicas = replicas
        # Half the socket timeout: WAIT must answer before the read of its answer times out.
        self._wait_ms = _ms(timeout / 2)
        self._ready = not isinstance(client, RedisCluster)
        self._init_lock = asyncio.Lock()
        self.replica_id = secrets.token_hex(8)
        self._awaited: dict[str, _Awaited] = {}
        self._acks: set[asyncio.Task[None]] = set()

    async def _initialise(self) -> None:
        """Discover the cluster once, before any command.

        redis-py 8.x's cluster client breaks connections (AttributeError,
        "Connection closed by server") when many first commands initialise it
        at once, which is exactly what concurrent requests after start-up do.
        A failed attempt is retried by the next call, so a late cluster recovers.
        """
        async with self._init_lock:
            if not self._ready:
                await self._redis.initialize()
                self._ready = True

    def _k(self, key: str) -> str:
        return self._prefix + key

    @_fail_closed
    async def get(self, key: str) -> bytes | None:
        return await self._redis.get(self._k(key))

    @_fail_closed
    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        only_if_new: bool = False,
        only_if_exists: bool = False,
    ) -> bool:
        if only_if_new and only_if_exists:
            raise ValueError("only_if_new and only_if_exists exclude each other")
        px = _ms(ttl) if ttl is not None else None
        written = await self._redis.set(
            self._k(key), value, px=px, nx=only_if_new, xx=only_if_exists
        )
        return bool(written)

    @_fail_closed
    async def replace(self, key: str, expected: bytes, value: bytes) -> bool:
        return bool(await self._redis.eval(_REPLACE, 1, self._k(key), expected, value))

    @_fail_closed
    async def delete_if(self, key: str, expected: bytes) -> bool:
        return bool(await self._redis.eval(_DELETE_IF, 1, self._k(key), expected))

    @_fail_closed
    async def take(self, key: str) -> bytes | None:
        return await self._redis.getdel(self._k(key))

    @_fail_closed
    async def delete(self, *keys: str, durable: bool = False) -> int:
        if not keys:
            return 0
        if durable and self._replicas:
            return await self._delete_replicated(keys)
        total = 0
        for key in keys:
            total += await self._redis.delete(self._k(key))
        return total

    async def _delete_replicated(self, keys: tuple[str, ...]) -> int:
        """DEL, then WAIT on the same connection: answered once a replica has it too.

        Under Sentinel a failover promotes a replica while the old master still
        takes writes for seconds, and drops them when it is demoted. A
        revocation only the old master saw would come undone, so it counts as
        done only once `replicas` replicas acknowledged it; else fail closed.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.delete(self._k(key))
            pipe.execute_command("WAIT", self._replicas, self._wait_ms)
            *deleted, acknowledged = await pipe.execute()
        if acknowledged < self._replicas:
            raise StoreUnavailable(
                detail=f"a revocation reached {acknowledged} of {self._replicas} replicas in time"
            )
        return sum(deleted)

    @_fail_closed
    async def expire(self, key: str, ttl: float) -> None:
        await self._redis.pexpire(self._k(key), _ms(ttl))

    @_fail_closed
    async def add_member(self, key: str, member: str, ttl: float | None = None) -> None:
        await self._redis.sadd(self._k(key), member)
        if ttl is not None:
            await self._redis.pexpire(self._k(key), _ms(ttl), gt=True)
            await self._redis.pexpire(self._k(key), _ms(ttl), nx=True)

    @_fail_closed
    async def remove_member(self, key: str, member: str) -> None:
        await self._redis.srem(self._k(key), member)

    @_fail_closed
    async def members(self, key: str) -> set[str]:
        return {m.decode() for m in await self._redis.smembers(self._k(key))}

    @_fail_closed
    async def hset(self, key: str, fields: dict[str, str]) -> None:
        await self._redis.hset(self._k(key), mapping=fields)

    @_fail_closed
    async def hgetall(self, key: str) -> dict[str, str]:
        raw = await self._redis.hgetall(self._k(key))
        return {k.decode(): v.decode() for k, v in raw.items()}

    @_fail_closed
    async def ping(self) -> None:
        await self._redis.ping()

    async def publish(self, channel: str, message: str, confirm: bool = False) -> None:
        if not confirm:
            await self._publish(channel, message)
            return
        nonce = secrets.token_hex(8)
        awaited = self._awaited[nonce] = _Awaited()
        try:
            registered = await self._publish_to_registered(channel, f"{message} {nonce}")
            deadline = asyncio.get_running_loop().time() + LIVENESS + MARGIN
            await awaited.all_of(registered - {self.replica_id}, deadline)
        finally:
            del self._awaited[nonce]

    @_fail_closed
    async def _publish(self, channel: str, message: str) -> None:
        await self._redis.publish(self._k(channel), message)

    @_fail_closed
    async def _publish_to_registered(self, channel: str, message: str) -> set[str]:
        names = await self._redis.eval(
            _PUBLISH_TO_REGISTERED, 1, self._k(_REGISTRY), self._k(channel), message
        )
        return {n.decode() for n in names}

    async def _register(self) -> None:
        """Say for how long this replica may serve from its cache, before each heartbeat."""
        await self._redis.eval(
            _REGISTER, 1, self._k(_REGISTRY), self.replica_id, _ms(LIVENESS + MARGIN)
        )

    async def _deregister(self) -> None:
        with contextlib.suppress(*_OUTAGES):
            await self._redis.zrem(self._k(_REGISTRY), self.replica_id)

    def _acknowledge(self, channel: str, nonce: str) -> None:
        """Tell the revoking replica this one has forgotten the session (off the read loop)."""

        async def ack() -> None:
            with contextlib.suppress(*_OUTAGES):
                await self._redis.publish(self._k(channel + _ACKS), f"{nonce} {self.replica_id}")

        task = asyncio.get_running_loop().create_task(ack())
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    def _acknowledged(self, data: str) -> None:
        nonce, _, replica = data.partition(" ")
        awaited = self._awaited.get(nonce)
        if awaited is not None:
            awaited.heard(replica)

    async def listen(
        self, channel: str, subscriber: Subscriber, stop: asyncio.Event, heartbeat: float = 0.25
    ) -> None:
        """Subscribe, PING every `heartbeat` seconds, start over whenever it breaks.

        Ends when `stop` is set (within one heartbeat). Cancelling it instead is
        unsafe: redis-py can swallow a cancellation that lands mid-command and
        leave the task waiting on a socket for good.
        """
        broken = False
        while not stop.is_set():
            try:
                if not self._ready:
                    await self._initialise()
                await self._subscription(channel, subscriber, heartbeat, broken, stop)
            except _OUTAGES as exc:
                if not broken:
                    log.warning("lost the subscription to %s: %s", channel, exc)
                broken = True
            subscriber.lost()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _RESUBSCRIBE_AFTER)

    async def _subscription(
        self,
        channel: str,
        subscriber: Subscriber,
        heartbeat: float,
        was_broken: bool,
        stop: asyncio.Event,
    ) -> None:
        """One subscription, kept honest about the messages it may have missed.

        Whatever is published while a subscription is down is gone. So its
        connection gets no retry: a break reaches the listen loop at once, which
        tells the subscriber and subscribes anew. redis-py can still reconnect
        and subscribe again on its own (a command sent on a closed connection
        reconnects it); that shows up as a second `subscribe` confirmation,
        which tells the subscriber the same.

        Each heartbeat renews this replica's registration and sends a PING
        carrying its own send time, so the answer proves liveness as of the
        sending, however late it is read. The acks channel carries the
        confirmations of revocations this replica is waiting for.
        """
        loop = asyncio.get_running_loop()
        pubsub = self._redis.pubsub()
        data, acks = self._k(channel), self._k(channel + _ACKS)
        confirmed: set[str] = set()
        # Each heartbeat's registration runs beside its PING, so a break of the
        # subscription is heard at once; its answer counts only once that registration
        # is written (dated before it, it then outlives what the answer proves).
        registering: dict[str, asyncio.Task[None]] = {}
        pooled_retry = None
        try:
            started = time.monotonic()
            await self._register()
            await pubsub.subscribe(data, acks)
            pooled_retry, pubsub.connection.retry = pubsub.connection.retry, _NO_RETRY
            if was_broken:
                log.warning("subscribed to %s again", channel)
                subscriber.lost()
            heard = next_ping = loop.time()
            while not stop.is_set():
                now = loop.time()
                if now - heard > heartbeat * _SILENT_HEARTBEATS:
                    raise TimeoutError(f"no answer to {_SILENT_HEARTBEATS} heartbeats")
                if now >= next_ping:
                    sent = repr(time.monotonic())
                    registering[sent] = _quietly(loop.create_task(self._register()))
                    await pubsub.ping(sent)
                    next_ping = now + heartbeat
                message = await pubsub.get_message(timeout=max(0.0, next_ping - loop.time()))
                if message is None:
                    continue
                heard = loop.time()
                kind, name = message["type"], _text(message.get("channel"))
                if kind == "message" and name == acks:
                    self._acknowledged(_text(message["data"]))
                elif kind == "message":
                    self._deliver(channel, subscriber, _text(message["data"]))
                elif kind == "subscribe":
                    if name in confirmed:
                        log.warning("subscribed to %s again after a reconnect", channel)
                        subscriber.lost()
                    confirmed.add(name)
                    if confirmed == {data, acks}:
                        subscriber.alive(started)
                elif kind == "pong" and (done := registering.pop(_text(message["data"]), None)):
                    await done
                    subscriber.alive(float(_text(message["data"])))
        finally:
            subscriber.lost()
            if pooled_retry is not None and pubsub.connection is not None:
                pubsub.connection.retry = pooled_retry
            await pubsub.aclose()
            await self._deregister()

    def _deliver(self, channel: str, subscriber: Subscriber, data: str) -> None:
        """Hand the message over; a revocation asking for it is confirmed once handled."""
        message, _, nonce = data.partition(" ")
        subscriber.received(message)
        if nonce:
            self._acknowledge(channel, nonce)

    async def close(self) -> None:
        """Also closes the connections to the sentinels, which the master client does not own."""
        pool = getattr(self._redis, "connection_pool", None)
        await self._redis.aclose()
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()
