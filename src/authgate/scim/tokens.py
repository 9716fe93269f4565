"""SCIM bearer tokens: random, shown once, stored only as a SHA-256 digest, one connection each.

Keys:
  scim-token:{sha256}   the token's record (id, connection, description, created_at)
  scim-token-id:{id}    id -> sha256, so a token can be revoked by its public id
  scim-tokens           set of token ids
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass

from authgate.session.kv import KeyValueStore

TOKEN_PREFIX = "agscim_"  # noqa: S105 (a marker, not a secret)
MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    connection: str
    description: str
    created_at: float

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TokenInfo:
        return cls(**json.loads(raw))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ScimTokens:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    async def create(self, connection: str, description: str = "") -> tuple[TokenInfo, str]:
        """A new token for `connection`; the secret is returned here and never again."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(secrets.token_hex(6), connection, description, time.time())
        digest = _digest(secret)
        await self._kv.set("scim-token:" + digest, info.to_json())
        await self._kv.set("scim-token-id:" + info.id, digest.encode())
        await self._kv.add_member("scim-tokens", info.id)
        return info, secret

    async def verify(self, secret: str) -> TokenInfo | None:
        """The token's record, or None; a lookup by digest never compares secrets byte by byte."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > MAX_TOKEN_LENGTH:
            return None
        raw = await self._kv.get("scim-token:" + _digest(secret))
        return TokenInfo.from_json(raw) if raw else None

    async def list(self) -> list[TokenInfo]:
        found = []
        for token_id in await self._kv.members("scim-tokens"):
            digest = await self._kv.get("scim-token-id:" + token_id)
            raw = await self._kv.get("scim-token:" + digest.decode()) if digest else None
            if raw:
                found.append(TokenInfo.from_json(raw))
        return sorted(found, key=lambda t: t.created_at)

    async def revoke(self, token_id: str) -> bool:
        digest = await self._kv.take("scim-token-id:" + token_id)
        await self._kv.remove_member("scim-tokens", token_id)
        if digest is None:
            return False
        await self._kv.delete("scim-token:" + digest.decode())
        return True

    async def revoke_connection(self, connection: str) -> int:
        """Revoke every token of a connection (used when the connection is retired)."""
        gone = 0
        for info in await self.list():
            if info.connection == connection:
                gone += await self.revoke(info.id)
        return gone
