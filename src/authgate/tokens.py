"""Bearer tokens kept in the store: random, shown once, stored only as a SHA-256 digest.

One implementation for each kind of machine credential (SCIM provisioning,
the admin API), each with its own key namespace and a prefix that names it,
so a token of one kind is never even looked up as another. Keys:
  {kind}-token:{sha256}   the token's record (id, connection, description, created_at)
  {kind}-token-id:{id}    id -> sha256, so a token can be revoked by its public id
  {kind}-tokens           set of token ids
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import ClassVar

from authgate.session.kv import KeyValueStore

MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a token may do; `connection` is empty for a token not tied to one."""

    id: str
    connection: str
    description: str
    created_at: float
    # A token that lapses on its own (setup links); None: valid until revoked.
    expires_at: float | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TokenInfo:
        return cls(**json.loads(raw))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class BearerTokens:
    kind: ClassVar[str]
    prefix: ClassVar[str]

    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    async def create(
        self, connection: str = "", description: str = "", ttl: float | None = None
    ) -> tuple[TokenInfo, str]:
        """A new token; the secret is returned here and never again. With `ttl` it lapses."""
        secret = self.prefix + secrets.token_urlsafe(32)
        now = time.time()
        expires = now + ttl if ttl is not None else None
        info = TokenInfo(secrets.token_hex(6), connection, description, now, expires)
        digest = _digest(secret)
        await self._kv.set(f"{self.kind}-token:{digest}", info.to_json(), ttl=ttl)
        await self._kv.set(f"{self.kind}-token-id:{info.id}", digest.encode(), ttl=ttl)
        await self._kv.add_member(f"{self.kind}-tokens", info.id)
        return info, secret

    async def verify(self, secret: str) -> TokenInfo | None:
        """The token's record, or None; a lookup by digest never compares secrets byte by byte."""
        if not secret.startswith(self.prefix) or len(secret) > MAX_TOKEN_LENGTH:
            return None
        raw = await self._kv.get(f"{self.kind}-token:{_digest(secret)}")
        info = TokenInfo.from_json(raw) if raw else None
        if info is None or (info.expires_at is not None and info.expires_at <= time.time()):
            return None
        return info

    async def list(self) -> list[TokenInfo]:
        found = []
        for token_id in await self._kv.members(f"{self.kind}-tokens"):
            digest = await self._kv.get(f"{self.kind}-token-id:{token_id}")
            raw = await self._kv.get(f"{self.kind}-token:{digest.decode()}") if digest else None
            if raw:
                found.append(TokenInfo.from_json(raw))
        return sorted(found, key=lambda t: t.created_at)

    async def revoke(self, token_id: str) -> bool:
        digest = await self._kv.take(f"{self.kind}-token-id:{token_id}")
        await self._kv.remove_member(f"{self.kind}-tokens", token_id)
        if digest is None:
            return False
        await self._kv.delete(f"{self.kind}-token:{digest.decode()}")
        return True


class AdminTokens(BearerTokens):
    """Admin API credentials beside the one in the config file (`admin.token`)."""

    kind = "admin"
    prefix = "agadm_"


class SetupLinks(BearerTokens):
    """The secret part of a setup link: one connection's SP values, IdP form and test."""

    kind = "setup"
    prefix = "agsetup_"
