"""How old the last good copy of an IdP document is, and what readiness says about it.

A document authgate loads from the IdP (OIDC discovery, JWKS, SAML metadata)
keeps serving while refreshes fail. Readiness fails until the first copy is
loaded, and again only once the last good copy is older than a limit, so a
pod does not leave service because the IdP missed one refresh. The reasons
are authgate's own words — never a library message, a URL or bytes of the
IdP's answer — because readyz answers anyone who asks.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

GRACE_FLOOR = 600.0
FIRST_RETRY = 1.0
MAX_RETRY = 30.0


def grace(ttl: float) -> float:
    """How long past its TTL a copy still counts as fresh: the TTL again, at least 10 minutes."""
    return max(ttl, GRACE_FLOOR)


def retry_delay(failures: int) -> float:
    """Wait before the next try at a document never loaded: 1 s, 2 s, 4 s ... at most 30 s."""
    return min(FIRST_RETRY * 2 ** max(failures - 1, 0), MAX_RETRY)


def span(seconds: float) -> str:
    """A duration in its two largest units: 45s, 10m, 1h 5m, 7d."""
    left = max(round(seconds), 0)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for (unit, size), (small, small_size) in itertools.pairwise(units):
        if left >= size:
            count, rest = divmod(left, size)
            more = f" {rest // small_size}{small}" if rest >= small_size else ""
            return f"{count}{unit}{more}"
    return f"{left}s"


class Freshness:
    """When one document was last loaded, and why the latest attempt failed if it did.

    `limit` is how old the last good copy may be for the connection to stay
    ready; `rule` says where that limit comes from, for the readiness line.
    """

    def __init__(
        self, what: str, limit: float, rule: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self.limit = limit
        self.rule = rule
        self._clock = clock
        self.loaded_at: float | None = None
        self.failure: str | None = None
        self.failures = 0

    def succeeded(self, at: float | None = None) -> None:
        self.loaded_at = self._clock() if at is None else at
        self.failure, self.failures = None, 0

    def failed(self, reason: str) -> None:
        """`reason` is a short phrase of authgate's own (`unreachable`, `HTTP 503`)."""
        self.failure = reason
        self.failures += 1

    def _cause(self) -> str:
        return f" (last attempt: {self.failure})" if self.failure else ""

    def problem(self) -> str | None:
        """None while a copy is loaded and young enough, else the readiness line's reason."""
        if self.loaded_at is None:
            return f"metadata_unavailable: {self.what} not loaded yet{self._cause()}"
        age = self._clock() - self.loaded_at
        if age > self.limit:
            return (
                f"metadata_unavailable: {self.what} last loaded {span(age)} ago,"
                f" more than {self.rule}{self._cause()}"
            )
        return None
