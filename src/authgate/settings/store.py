"""Where sessions live: the session settings and the Redis topologies behind them."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from authgate.settings.base import Duration, HostPort, _Model


class SentinelSettings(_Model):
    master: str
    nodes: list[HostPort] = Field(min_length=1)
    password: str | None = None
    sentinel_password: str | None = None


class RedisSettings(_Model):
    url: str | None = None
    sentinel: SentinelSettings | None = None
    cluster_nodes: list[HostPort] = []
    key_prefix: str = "authgate:"
    timeout: Duration = 2.0
    # How many replicas must have a revocation before it answers (Redis WAIT); default
    # 1 under Sentinel, where a failover drops what only the old master took, else 0.
    wait_replicas: int | None = Field(default=None, ge=0, le=10)

    @property
    def revocation_replicas(self) -> int:
        if self.wait_replicas is not None:
            return self.wait_replicas
        return 1 if self.sentinel is not None else 0

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str | None) -> str | None:
        """Checked here: redis-py reads a bad port or database only when it first connects."""
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// url needs the socket path (unix:///run/redis.sock)")
            return url
        expected = f"expected {parts.scheme}://host:6379/0"
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"the port is not a number from 1 to 65535 ({expected})") from None
        if not parts.hostname:
            raise ValueError(f"the host is missing ({expected})")
        if port == 0:
            raise ValueError(f"the port is not a number from 1 to 65535 ({expected})")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(f"the database after the host must be a number ({expected})")
        return url

    @model_validator(mode="after")
    def _one_topology(self) -> RedisSettings:
        chosen = [
            n
            for n, v in (
                ("url", self.url),
                ("sentinel", self.sentinel),
                ("cluster_nodes", self.cluster_nodes),
            )
            if v
        ]
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of url (standalone), sentinel or cluster_nodes"
                f" (found {', '.join(chosen) or 'none'})"
            )
        return self


class SessionSettings(_Model):
    store: Literal["redis", "memory"]
    redis: RedisSettings | None = None
    cookie_name: str | None = None
    lifetime: Duration = 8 * 3600.0
    idle_timeout: Duration = 3600.0
    login_state_ttl: Duration = 600.0
    # Each process caches sessions it read, invalidated over Redis pub/sub (session/cache.py).
    cache: bool = True

    @model_validator(mode="after")
    def _redis_needed(self) -> SessionSettings:
        if self.store == "redis" and self.redis is None:
            raise ValueError("store is redis but the redis section is missing (add redis.url)")
        if self.idle_timeout > self.lifetime:
            raise ValueError("idle_timeout must not be longer than lifetime")
        return self
