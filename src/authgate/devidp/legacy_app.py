"""The demo's "legacy" application: it knows no SAML or OIDC, only the headers authgate sends.

It shows what it received and does what a careful upstream should: it does
not simply trust `X-User` from the network but verifies `X-Authgate-Assertion`
with the keys authgate publishes at `{prefix}/jwks.json` (fetched over HTTP,
cached, refetched when an unknown key id appears), and checks that the signed
claims agree with the plain headers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import jinja2
from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

IDENTITY_HEADERS = (
    "X-User",
    "X-Email",
    "X-User-Name",
    "X-User-Id",
    "X-Groups",
    "X-Roles",
    "X-Auth-Connection",
)
ASSERTION_HEADER = "X-Authgate-Assertion"
REFETCH_INTERVAL = 10.0
FETCH_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking the assertion: its claims, or why it was not accepted."""

    claims: dict[str, object] | None
    problem: str | None


class AssertionVerifier:
    """authgate's JWKS, fetched on first use and again (rate limited) for an unknown `kid`."""

    def __init__(self, jwks_url: str, issuer: str, http: aiohttp.ClientSession) -> None:
        self._url = jwks_url
        self._issuer = issuer
        self._http = http
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> KeySet:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        async with self._http.get(self._url, timeout=timeout) as response:
            response.raise_for_status()
            document = await response.json()
        self._fetched_at = time.monotonic()
        return KeySet.import_key_set(document)

    async def _key_set(self, kid: str | None) -> KeySet:
        async with self._lock:
            known = self._keys is not None and any(k.kid == kid for k in self._keys.keys)
            due = time.monotonic() - self._fetched_at > REFETCH_INTERVAL
            if self._keys is None or (not known and due):
                self._keys = await self._fetch()
            return self._keys

    async def verify(self, token: str) -> Verdict:
        try:
            kid = extract_compact(token.encode()).protected.get("kid")
            keys = await self._key_set(kid)
            decoded = jwt.decode(token, keys, algorithms=["ES256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self._issuer},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            return Verdict(None, f"{type(exc).__name__}: {exc}")
        except aiohttp.ClientError as exc:
            return Verdict(None, f"cannot fetch {self._url}: {exc}")
        return Verdict(dict(decoded.claims), None)


VERIFIER: web.AppKey[AssertionVerifier] = web.AppKey("verifier", AssertionVerifier)
PAGES: web.AppKey[jinja2.Environment] = web.AppKey("pages", jinja2.Environment)
PREFIX: web.AppKey[str] = web.AppKey("prefix", str)


def _mismatches(claims: dict[str, object], headers: dict[str, str]) -> list[str]:
    """Headers that disagree with the signed claims: a sign of headers set by someone else."""
    pairs = {
        "X-User-Id": claims.get("sub"),
        "X-User": claims.get("preferred_username"),
        "X-Email": claims.get("email"),
        "X-Auth-Connection": claims.get("connection"),
    }
    return [
        name for name, value in pairs.items() if value is not None and headers.get(name) != value
    ]


async def page(request: web.Request) -> web.Response:
    headers = {name: request.headers.get(name, "") for name in IDENTITY_HEADERS}
    token = request.headers.get(ASSERTION_HEADER)
    verdict = await request.app[VERIFIER].verify(token) if token else Verdict(None, "not sent")
    mismatched = _mismatches(verdict.claims, headers) if verdict.claims else []
    roles = [r.strip() for r in headers["X-Roles"].split(",") if r.strip()]
    html = (
        request.app[PAGES]
        .get_template("legacy_app.html")
        .render(
            path=request.path,
            headers=headers,
            verdict=verdict,
            claims=json.dumps(verdict.claims, indent=2, sort_keys=True) if verdict.claims else "",
            mismatched=mismatched,
            is_admin="admin" in roles,
            prefix=request.app[PREFIX],
        )
    )
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


def create_app(authgate_url: str, prefix: str) -> web.Application:
    """`authgate_url` is authgate's public URL: the assertion issuer and where the JWKS is."""
    app = web.Application()
    app[PREFIX] = prefix
    app[PAGES] = jinja2.Environment(
        loader=jinja2.PackageLoader("authgate.devidp", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )

    async def client(app: web.Application) -> AsyncIterator[None]:
        http = aiohttp.ClientSession()
        app[VERIFIER] = AssertionVerifier(authgate_url + prefix + "/jwks.json", authgate_url, http)
        yield
        await http.close()

    app.cleanup_ctx.append(client)
    app.router.add_get("/{tail:.*}", page)
    return app
