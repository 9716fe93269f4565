"""Entra ID groups overage: the groups a token could not carry, read from Microsoft Graph.

Above 200 groups Entra ID leaves `groups` out of the ID token and says so with
`_claim_names: {"groups": ...}` (or `hasgroups: true`). The `_claim_sources`
URL inside the token is never called: the token must not be able to point
authgate at a server. Instead authgate asks Graph itself, with an app-only
token obtained by client credentials, for the user's transitive group
memberships, following `@odata.nextLink` only while it stays on Graph.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from authgate.errors import ProtocolError
from authgate.protocols.oidc_http import FetchError, get_object, request_json
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
        self._http = http
        self._settings = settings
        self._client_id = client_id
        self._secret = secret
        self._timeout = timeout

    async def _app_token(self, tenant: str) -> str:
        url = f"{self._settings.login_url}/{quote(tenant, safe='')}/oauth2/v2.0/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret,
            "scope": f"{self._settings.base_url}/.default",
        }
        answer = await request_json(self._http, "POST", url, self._timeout, data=form)
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise FetchError("Graph token answer has no access_token")
        return token

    def _same_origin(self, url: str) -> bool:
        base, other = urlsplit(self._settings.base_url), urlsplit(url)
        return (base.scheme, base.netloc) == (other.scheme, other.netloc)

    async def groups_of(self, claims: dict[str, Any]) -> tuple[str, ...]:
        """Transitive group memberships of the token's user (`oid` in tenant `tid`)."""
        oid, tenant = claims.get("oid"), self._settings.tenant_id or claims.get("tid")
        if not isinstance(oid, str) or not isinstance(tenant, str):
            raise ProtocolError("groups_overage", "the token has no oid/tid to look groups up by")
        field = self._settings.group_field
        url: str | None = (
            f"{self._settings.base_url}/v1.0/users/{quote(oid, safe='')}"
            f"/transitiveMemberOf/microsoft.graph.group?$select=id,displayName"
        )
        groups: list[str] = []
        try:
            headers = {"Authorization": "Bearer " + await self._app_token(tenant)}
            pages = 0
            while url is not None:
                pages += 1
                if pages > MAX_PAGES:
                    raise FetchError(f"Graph returned more than {MAX_PAGES} pages of groups")
                page = await get_object(self._http, url, self._timeout, headers=headers)
                values = page.get("value")
                if not isinstance(values, list):
                    raise FetchError("Graph page has no value list")
                groups.extend(str(g[field]) for g in values if isinstance(g, dict) and g.get(field))
                url = page.get("@odata.nextLink")
                if url is not None and not (isinstance(url, str) and self._same_origin(url)):
                    raise FetchError(f"Graph nextLink {url!r} leaves {self._settings.base_url}")
        except FetchError as exc:
            raise ProtocolError("groups_overage", f"Microsoft Graph: {exc}") from None
        return tuple(dict.fromkeys(groups))
