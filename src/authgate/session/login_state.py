"""Pre-login state: one short-lived browser cookie, many pending logins behind it.

The cookie holds only a random browser id. Each login started in any tab
stores its state (OIDC state/nonce/verifier, SAML request id, return path)
under its own key, bound to that browser id, and is consumed exactly once.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any

from authgate.errors import LoginStateError
from authgate.session.kv import KeyValueStore


def new_browser_id() -> str:
    return secrets.token_urlsafe(32)


class LoginStateStore:
    def __init__(self, kv: KeyValueStore, ttl: float) -> None:
        self._kv = kv
        self.ttl = ttl

    async def put(self, browser_id: str, data: dict[str, Any], key: str | None = None) -> str:
        """Store state for one pending login; returns its key (random unless given)."""
        key = key or secrets.token_urlsafe(32)
        payload = json.dumps({"bid": browser_id, "data": data}).encode()
        await self._kv.set("login:" + key, payload, self.ttl)
        return key

    async def take(self, key: str, browser_id: str | None) -> dict[str, Any]:
        """Consume a pending login once; another browser's state gives state_mismatch."""
        if not key or len(key) > 256:
            raise LoginStateError("state_expired", "no pending sign-in for this state")
        raw = await self._kv.take("login:" + key)
        if raw is None:
            raise LoginStateError("state_expired", "no pending sign-in for this state")
        stored = json.loads(raw)
        if not browser_id or not hmac.compare_digest(stored["bid"], browser_id):
            raise LoginStateError("state_mismatch", "the sign-in was started in another browser")
        return stored["data"]
