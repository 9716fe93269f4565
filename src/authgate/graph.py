"""Microsoft Graph, app-only: the one client behind groups overage and directory sync.

A client-credentials token from `{login_url}/{tenant}/oauth2/v2.0/token`,
then GETs whose `@odata.nextLink` is followed verbatim only while it stays on
Graph, so the bearer token never leaves for another host; no redirect is
followed either. A throttled answer (429, or a 5xx) waits for `Retry-After`
when given (capped), else backs off exponentially; answers are read up to a
size limit. The sign-in path and the sync differ only in their `Limits`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

log = logging.getLogger("authgate.graph")
Sleep = Callable[[float], Awaitable[None]]
MAX_BODY = 16 * 1024 * 1024


class GraphError(Exception):
    """A Graph exchange that did not complete; `reason` is a stable code, `detail` a sentence."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True, slots=True)
class Credentials:
    """An app registration allowed to read Graph, in one tenant of one cloud."""

    client_id: str
    client_secret: str
    login_url: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"


@dataclass(frozen=True, slots=True)
class Limits:
    """How long one call may take and how often a throttled one is tried again."""

    timeout: float
    max_retries: int
    backoff: float
    max_retry_after: float


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        body += chunk
        if len(body) > MAX_BODY:
            raise GraphError("graph_error", f"answer larger than {MAX_BODY} bytes")
    return bytes(body)


class Graph:
    """One app registration's Graph calls; keeps no state between them but its settings."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        credentials: Credentials,
        limits: Limits,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._limits = limits
        self._sleep = sleep
        self._origin = urlsplit(credentials.graph_url)

    @property
    def base_url(self) -> str:
        return self._credentials.graph_url

    async def _send(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """One call, retried on 429 and 5xx; returns (status, JSON body or None)."""
        limits = self._limits
        status = 0
        for attempt in range(limits.max_retries + 1):
            try:
                async with self._http.request(
                    method,
                    url,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=limits.timeout),
                    **kwargs,
                ) as resp:
                    body = _json(await _read(resp))
                    status, wait = resp.status, retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status, body, wait = 0, None, None
                log.warning("Graph call failed (%s): %s", type(exc).__name__, exc)
            if status != 429 and status < 500 and status != 0:
                return status, body
            if attempt == limits.max_retries:
                break
            delay = wait if wait is not None else limits.backoff * 2**attempt
            await self._sleep(min(delay, limits.max_retry_after))
        raise GraphError(
            "graph_unavailable" if status else "graph_unreachable",
            f"{method} {urlsplit(url).path} still failing (HTTP {status or '-'})"
            f" after {limits.max_retries} retries",
        )

    async def token(self, tenant: str) -> str:
        creds = self._credentials
        url = f"{creds.login_url}/{quote(tenant, safe='')}/oauth2/v2.0/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
            "scope": f"{creds.graph_url}/.default",
        }
        status, body = await self._send("POST", url, data=form)
        token = body.get("access_token") if isinstance(body, dict) else None
        if status != 200 or not isinstance(token, str):
            error = body.get("error", "") if isinstance(body, dict) else ""
            described = body.get("error_description", "") if isinstance(body, dict) else ""
            first_line = str(described).splitlines()[0] if described else ""
            raise GraphError("token_failed", f"HTTP {status} {error} {first_line}".strip())
        return token

    def _on_graph(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) == (self._origin.scheme, self._origin.netloc)

    async def pages(
        self, token: str, url: str, max_pages: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The `value` list of each page from `url` on, following `@odata.nextLink`."""
        next_url: str | None = url
        for _ in range(max_pages):
            if next_url is None:
                return
            if not self._on_graph(next_url):
                raise GraphError("bad_next_link", "@odata.nextLink leaves Graph; refused")
            status, body = await self._send(
                "GET",
                next_url,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            page = body if isinstance(body, dict) else {}
            if status != 200 or not isinstance(page.get("value"), list):
                error = page.get("error")
                code = error.get("code", "") if isinstance(error, dict) else ""
                raise GraphError("graph_error", f"HTTP {status} {code}".strip())
            yield [item for item in page["value"] if isinstance(item, dict)]
            link = page.get("@odata.nextLink")
            next_url = link if isinstance(link, str) else None
        if next_url is not None:
            raise GraphError("too_many_pages", f"more than {max_pages} pages")
