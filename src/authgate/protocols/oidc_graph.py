"""Entra ID groups overage: the groups a token could not carry, read from Microsoft Graph.

Above 200 groups Entra ID leaves `groups` out of the ID token and says so with
`_claim_names: {"groups": ...}` (or `hasgroups: true`). The `_claim_sources`
URL inside the token is never called: the token must not be able to point
authgate at a server. Instead authgate asks Graph itself, with an app-only
token obtained by client credentials, for the user's transitive group
memberships (`authgate.graph`: nextLink only while it stays on Graph, one
short retry of a throttled call, since a person is waiting).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from authgate.errors import ProtocolError
from authgate.graph import Credentials, Graph, GraphError, Limits
from authgate.settings import GraphSettings

MAX_PAGES = 50


def has_overage(claims: dict[str, Any], groups_claim: str) -> bool:
    names = claims.get("_claim_names")
    named = isinstance(names, dict) and groups_claim in names
    return groups_claim not in claims and (named or claims.get("hasgroups") is True)


class GraphGroups:
    """Reads one user's groups with the connection's Graph credentials."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        settings: GraphSettings,
        client_id: str,
        secret: str,
        timeout: float,
    ) -> None:
        self._settings = settings
        credentials = Credentials(client_id, secret, settings.login_url, settings.base_url)
        self._graph = Graph(http, credentials, sign_in_limits(timeout))

    async def groups_of(self, claims: dict[str, Any]) -> tuple[str, ...]:
        """Transitive group memberships of the token's user (`oid` in tenant `tid`)."""
        oid, tenant = claims.get("oid"), self._settings.tenant_id or claims.get("tid")
        if not isinstance(oid, str) or not isinstance(tenant, str):
            raise ProtocolError("groups_overage", "the token has no oid/tid to look groups up by")
        field = self._settings.group_field
        url = (
            f"{self._settings.base_url}/v1.0/users/{quote(oid, safe='')}"
            f"/transitiveMemberOf/microsoft.graph.group?$select=id,displayName"
        )
        groups: list[str] = []
        try:
            token = await self._graph.token(tenant)
            async for items in self._graph.pages(token, url, MAX_PAGES):
                groups.extend(str(g[field]) for g in items if g.get(field))
        except GraphError as exc:
            raise ProtocolError("groups_overage", f"Microsoft Graph: {exc.detail}") from None
        return tuple(dict.fromkeys(groups))


def sign_in_limits(timeout: float) -> Limits:
    """A person is waiting: one retry of a throttled call, and never a long Retry-After."""
    return Limits(timeout=timeout, max_retries=1, backoff=0.5, max_retry_after=2.0)
