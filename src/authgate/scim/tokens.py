"""SCIM bearer tokens: one connection each, stored hashed like every bearer token."""

from __future__ import annotations

from authgate.tokens import BearerTokens


class ScimTokens(BearerTokens):
    kind = "scim"
    prefix = "agscim_"

    async def revoke_connection(self, connection: str) -> int:
        """Revoke every token of a connection (used when the connection is retired)."""
        gone = 0
        for info in await self.list():
            if info.connection == connection:
                gone += await self.revoke(info.id)
        return gone
