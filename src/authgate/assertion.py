"""The signed identity assertion (`X-Authgate-Assertion`): an ES256 JWT per request.

The signing key is created once and shared by every replica: it lives in the
store (created with SET NX, so racing replicas agree on one key) or in a
mounted file. Rotation keeps the previous key in the JWKS so upstreams that
cached it keep verifying assertions signed just before the switch.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import ECKey

from authgate.session.kv import KeyValueStore
from authgate.session.sessions import Session

_STORE_KEY = "assertion-keys"
_LOCK_KEY = "assertion-keys-lock"


@dataclass(frozen=True, slots=True)
class KeyRing:
    current: ECKey
    previous: ECKey | None
    created_at: float

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        keys = [self.current] + ([self.previous] if self.previous else [])
        return {"keys": [k.as_dict(private=False, use="sig", alg="ES256") for k in keys]}

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "current": self.current.as_dict(private=True),
                "previous": self.previous.as_dict(private=True) if self.previous else None,
                "created_at": self.created_at,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> KeyRing:
        data = json.loads(raw)
        previous = ECKey.import_key(data["previous"]) if data["previous"] else None
        return cls(ECKey.import_key(data["current"]), previous, data["created_at"])


def _new_key() -> ECKey:
    return ECKey.generate_key("P-256", private=True, auto_kid=True)


def load_key_file(path: Path) -> KeyRing:
    """A mounted PEM (or JWK) file; a second key for rollover may follow in `<path>.previous`."""
    current = ECKey.import_key(path.read_bytes())
    current.ensure_kid()
    previous_path = path.with_name(path.name + ".previous")
    previous = None
    if previous_path.exists():
        previous = ECKey.import_key(previous_path.read_bytes())
        previous.ensure_kid()
    return KeyRing(current, previous, path.stat().st_mtime)


async def load_or_create(kv: KeyValueStore, rotate_after: float) -> KeyRing:
    """The shared key ring, rotating it when it is older than `rotate_after`."""
    raw = await kv.get(_STORE_KEY)
    while raw is None:
        ring = KeyRing(_new_key(), None, time.time())
        if await kv.set(_STORE_KEY, ring.to_json(), only_if_new=True):
            return ring
        raw = await kv.get(_STORE_KEY)
    ring = KeyRing.from_json(raw)
    if time.time() - ring.created_at >= rotate_after:
        ring = await rotate(kv, ring)
    return ring


async def rotate(kv: KeyValueStore, ring: KeyRing) -> KeyRing:
    """Make a new current key; one replica wins the lock, the others read its result."""
    if not await kv.set(_LOCK_KEY, b"1", ttl=30, only_if_new=True):
        raw = await kv.get(_STORE_KEY)
        return KeyRing.from_json(raw) if raw else ring
    rotated = KeyRing(_new_key(), ring.current, time.time())
    await kv.set(_STORE_KEY, rotated.to_json())
    return rotated


class AssertionSigner:
    """Signs one assertion per session and reuses it while most of its lifetime remains."""

    def __init__(self, ring: KeyRing, issuer: str, audience: str | None, lifetime: float) -> None:
        self.ring = ring
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime
        self._cache: OrderedDict[str, tuple[float, tuple[object, ...], str]] = OrderedDict()

    def replace_ring(self, ring: KeyRing) -> None:
        if ring.current.kid != self.ring.current.kid:
            self._cache.clear()
        self.ring = ring

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self.ring.jwks()

    def sign(self, session: Session, now: float | None = None) -> str:
        now = time.time() if now is None else now
        facts = (session.username, session.email, session.name, session.groups, session.roles)
        cached = self._cache.get(session.id)
        if cached and cached[1] == facts and cached[0] - now > self._lifetime / 2:
            return cached[2]
        exp = now + self._lifetime
        claims = {
            "iss": self._issuer,
            "sub": session.user_id,
            "iat": int(now),
            "exp": int(exp),
            "preferred_username": session.username,
            "email": session.email,
            "name": session.name,
            "groups": list(session.groups),
            "roles": list(session.roles),
            "connection": session.connection,
        }
        if self._audience:
            claims["aud"] = self._audience
        header = {"alg": "ES256", "kid": self.ring.current.kid}
        token = jwt.encode(header, claims, self.ring.current, algorithms=["ES256"])
        self._cache[session.id] = (exp, facts, token)
        if len(self._cache) > 10_000:
            self._cache.popitem(last=False)
        return token
