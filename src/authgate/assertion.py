"""The signed identity assertion (`X-Authgate-Assertion`): an ES256 JWT per request.

The signing key is created once and shared by every replica: it lives in the
store (created with SET NX, so racing replicas agree on one key) or in a
mounted file. The ring also holds the *next* key, published in the JWKS a
whole rotation period before it signs anything: replicas reload the ring only
every minute, so a key must be public everywhere before any replica uses it.
Rotation keeps the previous key in the JWKS so upstreams that cached it keep
verifying assertions signed just before the switch.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from authgate.session.cache import INVALIDATIONS
from authgate.session.kv import KeyValueStore
from authgate.session.sessions import Session
from authgate.settings import ConfigError

_STORE_KEY = "assertion-keys"
# Sent on the invalidation channel whenever a replica writes the ring: the others reload at once.
# Session digests are 64 hex digits, so this cannot be mistaken for one.
KEYS_CHANGED = "assertion-keys"
_LOCK_KEY = "assertion-keys-lock"
_CURVE = "P-256"
CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class KeyRing:
    current: ECKey
    previous: ECKey | None
    created_at: float
    next: ECKey | None = None

    def published(self) -> list[ECKey]:
        return [k for k in (self.current, self.next, self.previous) if k is not None]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {
            "keys": [k.as_dict(private=False, use="sig", alg="ES256") for k in self.published()]
        }

    def to_json(self) -> bytes:
        def dump(key: ECKey | None) -> dict[str, str] | None:
            return key.as_dict(private=True) if key is not None else None

        return json.dumps(
            {
                "current": dump(self.current),
                "previous": dump(self.previous),
                "next": dump(self.next),
                "created_at": self.created_at,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> KeyRing:
        data = json.loads(raw)

        def load(name: str) -> ECKey | None:
            value = data.get(name)
            return ECKey.import_key(value) if value else None

        current = ECKey.import_key(data["current"])
        return cls(current, load("previous"), data["created_at"], load("next"))


def _new_key() -> ECKey:
    return ECKey.generate_key(_CURVE, private=True, auto_kid=True)


def new_ring(now: float | None = None) -> KeyRing:
    return KeyRing(_new_key(), None, time.time() if now is None else now, _new_key())


def _read_signing_key(path: Path) -> ECKey:
    """A P-256 private key from PEM or JWK; anything else is a config error, not a 500 later."""
    try:
        raw = path.read_bytes()
        value = json.loads(raw) if raw.lstrip().startswith(b"{") else raw
        key = ECKey.import_key(value)
    except (OSError, ValueError, JoseError) as exc:
        raise ConfigError(
            [
                f"{path}: cannot load the assertion signing key ({exc}); expected a P-256 EC"
                " private key in PEM or JWK form"
            ]
        ) from None
    if key.curve_name != _CURVE or not key.is_private:
        raise ConfigError(
            [
                f"{path}: the assertion signing key must be a P-256 EC private key for ES256"
                f" (found {key.curve_name}, {'private' if key.is_private else 'public'})"
            ]
        )
    key.ensure_kid()
    return key


def load_key_file(path: Path) -> KeyRing:
    """A mounted PEM (or JWK) file; a second key for rollover may follow in `<path>.previous`."""
    current = _read_signing_key(path)
    previous_path = path.with_name(path.name + ".previous")
    previous = _read_signing_key(previous_path) if previous_path.exists() else None
    return KeyRing(current, previous, path.stat().st_mtime)


async def load_or_create(
    kv: KeyValueStore, rotate_after: float, held: KeyRing | None = None
) -> KeyRing:
    """The shared key ring, rotating it when it is older than `rotate_after`.

    A store that lost its data (a restart without persistence, a flush) gets
    back the ring this replica `held`, not a new one: every replica holds the
    same ring, so whichever writes first restores exactly what the others
    sign with, and the upstreams' cached JWKS stays valid.
    """
    raw = await kv.get(_STORE_KEY)
    while raw is None:
        ring = held or new_ring()
        if await kv.set(_STORE_KEY, ring.to_json(), only_if_new=True):
            await kv.publish(INVALIDATIONS, KEYS_CHANGED)
            return ring
        raw = await kv.get(_STORE_KEY)
    ring = KeyRing.from_json(raw)
    if time.time() - ring.created_at >= rotate_after:
        ring = await rotate(kv, ring)
    return ring


async def rotate(kv: KeyValueStore, ring: KeyRing) -> KeyRing:
    """Promote the pre-published next key; one replica wins the lock, the others read its result."""
    if not await kv.set(_LOCK_KEY, b"1", ttl=30, only_if_new=True):
        raw = await kv.get(_STORE_KEY)
        return KeyRing.from_json(raw) if raw else ring
    rotated = KeyRing(ring.next or _new_key(), ring.current, time.time(), _new_key())
    await kv.set(_STORE_KEY, rotated.to_json())
    await kv.publish(INVALIDATIONS, KEYS_CHANGED)
    return rotated


@dataclass(frozen=True, slots=True)
class _Cached:
    expires_at: int
    facts: tuple[object, ...]
    token: str


class AssertionSigner:
    """Signs one assertion per session and reuses it while more than half its lifetime remains.

    Reuse saves an ECDSA signature per request; the half-lifetime bound means an
    upstream never receives a token that expires sooner than `lifetime / 2`, and
    any change of the facts it carries (groups, roles, ...) signs a new one.
    """

    def __init__(self, ring: KeyRing, issuer: str, audience: str | None, lifetime: float) -> None:
        self.ring = ring
        self._issuer = issuer
        self._audience = audience
        self._lifetime = max(1, round(lifetime))
        self._cache: OrderedDict[str, _Cached] = OrderedDict()

    def replace_ring(self, ring: KeyRing) -> None:
        if ring.current.kid != self.ring.current.kid:
            self._cache.clear()
        self.ring = ring

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self.ring.jwks()

    def sign(self, session: Session, now: float | None = None) -> str:
        now = time.time() if now is None else now
        iat = int(now)
        facts = (
            session.user_id,
            session.connection,
            session.username,
            session.email,
            session.name,
            session.groups,
            session.roles,
            session.organization,
        )
        cached = self._cache.get(session.id)
        if cached and cached.facts == facts and cached.expires_at - now > self._lifetime / 2:
            self._cache.move_to_end(session.id)
            return cached.token
        exp = iat + self._lifetime
        claims: dict[str, object] = {
            "iss": self._issuer,
            "sub": session.user_id,
            "iat": iat,
            "exp": exp,
            "preferred_username": session.username,
            "groups": list(session.groups),
            "roles": list(session.roles),
            "connection": session.connection,
        }
        if session.email is not None:
            claims["email"] = session.email
        if session.name is not None:
            claims["name"] = session.name
        if session.organization is not None:
            claims["organization"] = session.organization
        if self._audience:
            claims["aud"] = self._audience
        header = {"alg": "ES256", "kid": self.ring.current.kid}
        token = jwt.encode(header, claims, self.ring.current, algorithms=["ES256"])
        self._cache[session.id] = _Cached(exp, facts, token)
        self._cache.move_to_end(session.id)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return token
