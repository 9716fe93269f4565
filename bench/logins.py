"""Real sign-ins, driven like a browser: OIDC against the test OP, SAML with signed responses.

Only authgate's own answer is timed: the OIDC callback (which includes its
token request to the OP on loopback) and the SAML ACS post. The SAML
responses are signed before the clock starts, so the load generator's own
signing never counts, and each answers a real AuthnRequest of its browser.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import aiohttp
from tests.saml_gate import decode_redirect
from tests.saml_idp import TestIdp, encode

LOGIN_COOKIE = "authgate_login"
SESSION_COOKIE = "authgate"
OAUTH2_PROXY_COOKIE = "_oauth2_proxy"
# Not the OP's user: one email may belong to one connection's user only (email_conflict).
SAML_USER = {
    "email": ["saml-user@example.com"],
    "displayName": ["SAML User"],
    "groups": ["Engineering"],
}


class LoginError(RuntimeError):
    pass


@dataclass(frozen=True)
class PendingSaml:
    """A started SP-initiated login: the browser's pre-login cookie and the signed answer."""

    login_cookie: str
    saml_response: str


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p99 in milliseconds (nearest rank), and how many samples they come from."""
    ordered = sorted(samples)
    if not ordered:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000

    return {
        "n": len(ordered),
        "p50_ms": rank(0.50),
        "p99_ms": rank(0.99),
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


def _cookie(resp: aiohttp.ClientResponse, name: str) -> str:
    morsel = resp.cookies.get(name)
    if morsel is None or not morsel.value:
        raise LoginError(f"{resp.url.path} answered {resp.status} without the {name} cookie")
    return morsel.value


async def _redirect(http: aiohttp.ClientSession, url: str, **kw: object) -> aiohttp.ClientResponse:
    resp = await http.get(url, allow_redirects=False, **kw)  # type: ignore[arg-type]
    await resp.read()
    if resp.status != 302:
        raise LoginError(f"{url} answered {resp.status}: {(await resp.text())[:300]}")
    return resp


class Browser:
    """Signs in through authgate at `base` (its public URL) over one shared client."""

    def __init__(self, http: aiohttp.ClientSession, base: str, idp: TestIdp) -> None:
        self.http = http
        self.base = base
        self.idp = idp

    @property
    def acs(self) -> str:
        return self.base + "/_authgate/saml/saml/acs"

    async def oidc(self) -> tuple[str, float]:
        """One whole OIDC login: the session id, and how long the callback took."""
        start = await _redirect(self.http, self.base + "/_authgate/oidc/corp/login?rd=/app/page")
        login = _cookie(start, LOGIN_COOKIE)
        back = await _redirect(self.http, start.headers["Location"])
        began = time.perf_counter()
        resp = await self.http.get(
            back.headers["Location"],
            allow_redirects=False,
            headers={"Cookie": f"{LOGIN_COOKIE}={login}", "Accept": "text/html"},
        )
        await resp.read()
        took = time.perf_counter() - began
        if resp.status != 302:
            raise LoginError(f"OIDC callback answered {resp.status}: {(await resp.text())[:300]}")
        return _cookie(resp, SESSION_COOKIE), took

    async def saml_start(self) -> PendingSaml:
        """Begin a SAML login and sign the IdP's answer to its AuthnRequest."""
        start = await _redirect(self.http, self.base + "/_authgate/saml/saml/login?rd=/app/page")
        rid = decode_redirect(start.headers["Location"]).get("ID")
        sp = self.base + "/_authgate/saml/saml"
        assertion = self.idp.assertion(
            audience=sp,
            recipient=self.acs,
            in_response_to=rid,
            name_id=SAML_USER["email"][0],
            attributes=SAML_USER,
        )
        root = self.idp.response(self.idp.sign(assertion), destination=self.acs, in_response_to=rid)
        return PendingSaml(_cookie(start, LOGIN_COOKIE), encode(root))

    async def saml_finish(self, pending: PendingSaml) -> tuple[str, float]:
        """Post the signed response to the ACS: the session id, and how long the ACS took."""
        began = time.perf_counter()
        resp = await self.http.post(
            self.acs,
            data={"SAMLResponse": pending.saml_response},
            allow_redirects=False,
            headers={"Cookie": f"{LOGIN_COOKIE}={pending.login_cookie}", "Accept": "text/html"},
        )
        await resp.read()
        took = time.perf_counter() - began
        if resp.status != 302:
            raise LoginError(f"SAML ACS answered {resp.status}: {(await resp.text())[:300]}")
        return _cookie(resp, SESSION_COOKIE), took


async def oauth2_proxy(http: aiohttp.ClientSession, base: str) -> str:
    """One OIDC login through oauth2-proxy at `base`: the Cookie header of its session.

    oauth2-proxy's CSRF cookie goes back with the callback; the session may be
    split over several cookies (`_oauth2_proxy_0`, `_1`, ...) when it is large.
    """
    start = await _redirect(http, base + "/oauth2/start?rd=/app/page")
    csrf = "; ".join(f"{name}={m.value}" for name, m in start.cookies.items())
    back = await _redirect(http, start.headers["Location"])
    done = await _redirect(http, back.headers["Location"], headers={"Cookie": csrf})
    session = sorted(
        f"{name}={m.value}"
        for name, m in done.cookies.items()
        if name.startswith(OAUTH2_PROXY_COOKIE) and not name.endswith("_csrf") and m.value
    )
    if not session:
        raise LoginError(f"oauth2-proxy's callback set no {OAUTH2_PROXY_COOKIE} cookie")
    return "; ".join(session)


async def oidc_latency(browser: Browser, count: int) -> list[float]:
    """Callback durations of `count` logins, one after the other."""
    return [(await browser.oidc())[1] for _ in range(count)]


async def saml_latency(browser: Browser, count: int) -> list[float]:
    """ACS durations of `count` logins, one after the other, all signed beforehand."""
    pending = [await browser.saml_start() for _ in range(count)]
    return [(await browser.saml_finish(p))[1] for p in pending]


async def storm(
    browser: Browser, pending_saml: list[PendingSaml], until: float, concurrency: int
) -> dict[str, list[float]]:
    """As many logins as `concurrency` browsers manage before `until`, half OIDC, half SAML."""
    timings: dict[str, list[float]] = {"oidc_callback": [], "saml_acs": []}

    async def oidc_loop() -> None:
        while time.monotonic() < until:
            timings["oidc_callback"].append((await browser.oidc())[1])

    async def saml_loop() -> None:
        while time.monotonic() < until and pending_saml:
            timings["saml_acs"].append((await browser.saml_finish(pending_saml.pop()))[1])

    loops = [oidc_loop() if i % 2 == 0 else saml_loop() for i in range(concurrency)]
    await asyncio.gather(*loops)
    return timings
