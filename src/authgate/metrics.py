"""Prometheus metrics, one registry per app so tests and workers never share globals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    logins: Counter
    upstream_latency: Histogram
    store_latency: Histogram
    store_errors: Counter
    # `labels()` validates and locks on every call; the hot path looks its child up once.
    _request_counters: dict[tuple[str, str], Counter] = field(default_factory=dict)
    # Request counts wait here for `flush`: an `inc` takes a lock (and, with several
    # workers, writes a shared file) and cost more than a forward-auth answer's own checks.
    _pending: dict[tuple[str, str], int] = field(default_factory=dict)

    def count(self, kind: str, outcome: str) -> None:
        """One request of `kind` (proxy, auth, ...) that ended with `outcome`."""
        pending = self._pending
        key = (kind, outcome)
        pending[key] = pending.get(key, 0) + 1

    def flush(self) -> None:
        """Move the pending request counts into the registry (every second, and before a scrape).

        A worker killed outright loses at most the counts since its last flush.
        """
        pending = dict(self._pending)
        self._pending.clear()
        for key, amount in pending.items():
            counter = self._request_counters.get(key)
            if counter is None:
                counter = self._request_counters[key] = self.requests.labels(*key)
            counter.inc(amount)

    async def flush_every(self, seconds: float) -> None:
        try:
            while True:
                await asyncio.sleep(seconds)
                self.flush()
        finally:
            self.flush()

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "authgate_requests_total",
                "Requests by kind (proxy, auth, login, ...) and outcome",
                ["kind", "outcome"],
                registry=registry,
            ),
            logins=Counter(
                "authgate_logins_total",
                "Completed sign-ins by connection, result and reason",
                ["connection", "result", "reason"],
                registry=registry,
            ),
            upstream_latency=Histogram(
                "authgate_upstream_seconds",
                "Time until the upstream answered with its headers",
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            ),
            store_latency=Histogram(
                "authgate_session_store_seconds",
                "Latency of session lookups",
                registry=registry,
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2),
            ),
            store_errors=Counter(
                "authgate_session_store_errors_total",
                "Session store operations that failed (requests answered 503)",
                registry=registry,
            ),
        )
