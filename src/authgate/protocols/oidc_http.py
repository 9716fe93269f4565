"""Talking to the provider: bounded JSON over HTTP, failures translated at this boundary.

Every call has a timeout and a size cap, never follows redirects (a token
endpoint that redirects is misconfigured, and following it could leak the
client secret elsewhere), and turns network or format trouble into one
`FetchError` that the caller maps to its SPEC §8 reason. Its `kind` is a
short phrase of authgate's own (`unreachable`, `HTTP 503`) that may be shown
where the message, which carries URLs and library text, may not.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from authgate.errors import OperatorError

MAX_BODY = 1024 * 1024


class FetchError(OperatorError):
    """The provider could not be reached or answered something unusable.

    `http_status` is the provider's answer, not the status authgate would answer with.
    """

    def __init__(
        self,
        message: str,
        http_status: int | None = None,
        body: Any = None,
        kind: str = "unusable answer",
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.body = body
        self.kind = kind


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        body += chunk
        if len(body) > MAX_BODY:
            raise FetchError(
                f"{resp.url.human_repr()}: answer larger than {MAX_BODY} bytes",
                kind="answer too large",
            )
    return bytes(body)


def _decode(raw: bytes, url: str, status: int) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise FetchError(
            f"{url}: HTTP {status} answer is not JSON", status, kind="answer is not JSON"
        ) from None


async def request_json(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    time_limit: float,
    *,
    headers: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
    ok_statuses: tuple[int, ...] = (200,),
) -> Any:
    """The decoded JSON answer; `FetchError` (with the decoded error body if any) otherwise."""
    try:
        async with http.request(
            method,
            url,
            headers={"Accept": "application/json", **(headers or {})},
            data=data,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=time_limit),
        ) as resp:
            raw = await _read(resp)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        kind = "timed out" if isinstance(exc, TimeoutError) else "unreachable"
        raise FetchError(f"{url}: {type(exc).__name__}: {exc}".rstrip(": "), kind=kind) from None
    if status not in ok_statuses:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        raise FetchError(f"{url}: HTTP {status}", status, body, kind=f"HTTP {status}")
    return _decode(raw, url, status)


async def get_object(http: aiohttp.ClientSession, url: str, time_limit: float, **kw: Any) -> dict:
    doc = await request_json(http, "GET", url, time_limit, **kw)
    if not isinstance(doc, dict):
        raise FetchError(f"{url}: expected a JSON object", kind="answer is not a JSON object")
    return doc
