"""The provider's signing keys (JWKS): cached, refetched on an unknown `kid`, rate limited.

Keys come only from the `jwks_uri` of the discovery document. A token's own
`jwk`, `jku`, `x5u` or `x5c` header is never looked at, so a token cannot bring
the key that verifies it. The key is picked here, by `kid` when the token names
one, otherwise as the single key that fits the algorithm (joserfc's `KeySet`
lookup refuses a token without `kid`, which real providers do send). A flood
of tokens naming random kids costs at most one refetch per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from authgate.errors import ProtocolError
from authgate.protocols.freshness import Freshness, grace, span
from authgate.protocols.oidc_http import FetchError, get_object

log = logging.getLogger("authgate.oidc")
RETRY_AFTER_FAILURE = 30.0

_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_KEY_CLASSES: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey]] = {
    "RSA": RSAKey,
    "EC": ECKey,
    "OKP": OKPKey,
}


def fits(key: Key, alg: str) -> bool:
    """Whether `key` may verify a signature made with `alg` (type, curve, use, alg, key_ops)."""
    if key.get("use") not in (None, "sig"):
        return False
    if key.alg not in (None, alg):
        return False
    ops = key.get("key_ops")
    if ops is not None and "verify" not in ops:
        return False
    if alg[:2] in ("RS", "PS"):
        return isinstance(key, RSAKey)
    if alg in _CURVES:
        return isinstance(key, ECKey) and key.curve_name == _CURVES[alg]
    if alg == "EdDSA":
        return isinstance(key, OKPKey) and key.curve_name in ("Ed25519", "Ed448")
    return False


def parse_jwks(doc: dict) -> list[Key]:
    """Public signing keys of a JWKS; entries authgate cannot use are skipped, not fatal."""
    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise FetchError("JWKS has no 'keys' list", kind="no keys list")
    keys: list[Key] = []
    for entry in entries:
        cls = _KEY_CLASSES.get(entry.get("kty")) if isinstance(entry, dict) else None
        if cls is None:
            continue
        try:
            key = cls.import_key(entry)
        except (JoseError, ValueError, TypeError):
            log.warning(
                "skipping an unusable key in the provider's JWKS (kid %r)", entry.get("kid")
            )
            continue
        if not key.is_private:
            keys.append(key)
    return keys


class KeyCache:
    """The JWKS of one provider; `resolve` returns the key for one token header."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        ttl: float,
        refetch_interval: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._ttl = ttl
        self._refetch_interval = refetch_interval
        self._timeout = timeout
        self._clock = clock
        self._uri: str | None = None
        self._keys: list[Key] = []
        self._fresh_until = 0.0
        self._last_forced = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0
        self.freshness = Freshness(
            "JWKS", ttl + grace(ttl), f"jwks_ttl {span(ttl)} + grace {span(grace(ttl))}", clock
        )

    def due_in(self) -> float:
        """Seconds until the cached keys are due for a refresh (or a retry)."""
        return self._fresh_until - self._clock()

    async def refresh_if_due(self, jwks_uri: str) -> None:
        """Fetch the keys unless a fresh copy of this `jwks_uri` is cached."""
        await self._refresh(jwks_uri, forced=False)

    async def resolve(self, jwks_uri: str, header: dict) -> Key:
        """The one key that may verify this token; `id_token_invalid` (signature) when none."""
        if jwks_uri != self._uri or self._clock() >= self._fresh_until:
            await self._refresh(jwks_uri, forced=False)
        key = self._pick(header)
        if key is None and self._clock() - self._last_forced >= self._refetch_interval:
            await self._refresh(jwks_uri, forced=True)
            key = self._pick(header)
        if key is None:
            raise ProtocolError("id_token_invalid", "signature: " + self._why_not(header))
        return key

    async def usable(self, jwks_uri: str, algorithms: list[str]) -> list[str]:
        """Descriptions (`kid kty alg`) of the keys that can verify one of `algorithms`."""
        await self.refresh_if_due(jwks_uri)
        found = []
        for key in self._keys:
            algs = [a for a in algorithms if fits(key, a)]
            if algs:
                found.append(f"{key.kid or '(no kid)'} {key.key_type} {'/'.join(algs)}")
        return found

    def _candidates(self, header: dict) -> list[Key]:
        alg, kid = header["alg"], header.get("kid")
        return [k for k in self._keys if fits(k, alg) and (kid is None or k.kid == kid)]

    def _pick(self, header: dict) -> Key | None:
        found = self._candidates(header)
        return found[0] if len(found) == 1 else None

    def _why_not(self, header: dict) -> str:
        kid, count = header.get("kid"), len(self._candidates(header))
        if kid is not None and count == 0:
            return f"no key with kid {kid!r} for {header['alg']} in the provider's JWKS"
        if count == 0:
            return f"the provider's JWKS has no key for {header['alg']}"
        return f"the token has no kid and {count} keys in the provider's JWKS fit {header['alg']}"

    async def _refresh(self, jwks_uri: str, forced: bool) -> None:
        started = self._clock()
        async with self._lock:
            already = self._uri == jwks_uri and (
                self._last_forced >= started if forced else self._clock() < self._fresh_until
            )
            if already:
                return
            if forced:
                self._last_forced = self._clock()
            self.fetches += 1
            try:
                keys = parse_jwks(await get_object(self._http, jwks_uri, self._timeout))
            except FetchError as exc:
                self.freshness.failed(exc.kind)
                if self._uri != jwks_uri or not self._keys:
                    raise ProtocolError("metadata_unavailable", f"JWKS: {exc}") from None
                log.warning("keeping the cached JWKS: %s", exc)
                self._fresh_until = self._clock() + min(self._ttl, RETRY_AFTER_FAILURE)
                return
            self._uri, self._keys = jwks_uri, keys
            self.freshness.succeeded()
            self._fresh_until = self._clock() + self._ttl
