"""The shipped nginx `auth_request` sites, run by a real nginx in front of authgate and Redis.

The nginx config is the file in `conf/nginx/` with only its addresses
replaced, so a broken shipped snippet fails these tests.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.async_api import expect
from yarl import URL

from authgate.app import create_app
from authgate.identity import Identity
from authgate.session.sessions import Session
from authgate.web.state import STATE
from tests.browser import async_chromium, screenshot_path
from tests.conftest import make_settings, sign_in
from tests.servers import Nginx
from tests.simplesamlphp import TYPED

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf" / "nginx"
MAIN_SITE = "authgate-auth-request.conf"
COMPAT_SITE = "authgate-oauth2-proxy-compat.conf"
BROWSER = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate"}
API = {"Accept": "application/json"}
BOB = Identity(
    connection="corp",
    subject="sub-bob",
    email="bob@example.com",
    email_verified=True,
    name="Bob Admin",
    groups=("admins",),
)


def shipped_site(name: str, authgate_port: int, app_port: int) -> str:
    """The shipped file with its example addresses pointed at this test's servers."""
    text = (CONF_DIR / name).read_text()
    for example, actual in (
        ("listen 80;", "listen 127.0.0.1:LISTEN_PORT;"),
        ("server 127.0.0.1:4180;", f"server 127.0.0.1:{authgate_port};"),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{app_port};"),
    ):
        assert text.count(example) == 1, f"{name} must contain {example!r} exactly once"
        text = text.replace(example, actual)
    return text


def test_the_nginx_page_shows_the_shipped_site():
    assert (CONF_DIR / MAIN_SITE).read_text() in (ROOT / "docs" / "nginx.md").read_text()


def assert_nginx_request_id(correlation_id: str, resp: aiohttp.ClientResponse) -> None:
    """The id nginx gave the request ($request_id), not one the client sent or authgate drew."""
    assert re.fullmatch(r"[0-9a-f]{32}", correlation_id), correlation_id
    assert resp.headers["X-Request-Id"] == correlation_id


async def refusal_page(resp: aiohttp.ClientResponse, status: int, reason: str) -> str:
    """authgate's error page, shown by nginx in place of its bare "403 Forbidden"."""
    html = await resp.text()
    assert resp.status == status, html
    assert resp.content_type == "text/html"
    assert "<center>nginx" not in html
    assert f'<code id="reason">{reason}</code>' in html
    cid = re.search(r'<code id="correlation-id">([^<]+)</code>', html)
    assert cid is not None
    assert_nginx_request_id(cid.group(1), resp)
    return html


@dataclass
class Stack:
    authgate: TestClient
    nginx: Nginx
    http: aiohttp.ClientSession

    def url(self, raw_path: str) -> URL:
        return URL(f"http://127.0.0.1:{self.nginx.port}{raw_path}", encoded=True)

    def cookie(self, session: Session) -> dict[str, str]:
        return {"Cookie": f"{self.authgate.app[STATE].cookies.session_name}={session.id}"}

    async def get(self, raw_path: str, **headers: str) -> aiohttp.ClientResponse:
        resp = await self.http.get(self.url(raw_path), headers=headers, allow_redirects=False)
        await resp.read()
        return resp

    async def upstream_saw(self, raw_path: str, **headers: str) -> dict[str, Any]:
        """What the echo app received; fails unless the request reached it."""
        resp = await self.get(raw_path, **headers)
        assert resp.status == 200, await resp.text()
        assert resp.headers["X-Upstream"] == "echo"
        return await resp.json()


@pytest.fixture
def stack_factory(
    serve: Callable[..., Any], redis_url: str, upstream: TestServer
) -> Callable[..., Any]:
    """nginx in front of authgate, over each of authgate's two front ends."""

    @asynccontextmanager
    async def start(site: str = MAIN_SITE, **overrides: Any) -> AsyncIterator[Stack]:
        upstream_url = str(upstream.make_url("")).rstrip("/")
        overrides.setdefault("access", {"public_paths": ["/public/", "/health"]})
        settings = make_settings(
            upstream_url, session={"store": "redis", "redis": {"url": redis_url}}, **overrides
        )
        client: TestClient = await serve(create_app(settings))
        assert upstream.port is not None
        nginx = Nginx(shipped_site(site, client.port, upstream.port)).start()
        try:
            async with aiohttp.ClientSession() as http:
                yield Stack(client, nginx, http)
        finally:
            nginx.stop()

    return start


@pytest.fixture
async def stack(stack_factory: Callable[..., Any]) -> AsyncIterator[Stack]:
    async with stack_factory() as running:
        yield running


async def test_browser_without_session_is_redirected_with_escaped_rd(stack: Stack):
    resp = await stack.get("/reports/q?x=1&y=a%20b", **BROWSER)
    assert resp.status == 302
    location = URL(resp.headers["Location"])
    assert location.path == "/_authgate/login"
    assert location.query["rd"] == "/reports/q?x=1&y=a%20b"
    assert set(location.query) == {"rd"}


async def test_api_without_session_gets_json_401(stack: Stack):
    resp = await stack.get("/api/items?x=1", **API)
    assert resp.status == 401
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["WWW-Authenticate"] == 'Cookie realm="authgate"'
    body = await resp.json()
    assert body["error"] == "unauthenticated"
    assert URL(body["login_url"]).query["rd"] == "/api/items?x=1"
    assert_nginx_request_id(body["correlation_id"], resp)
    assert "X-Upstream" not in resp.headers


async def test_browser_post_without_session_is_not_redirected(stack: Stack):
    resp = await stack.http.post(
        stack.url("/form"), data=b"a=1" * 1000, headers=BROWSER, allow_redirects=False
    )
    html = await refusal_page(resp, 401, "unauthenticated")
    link = re.search(r'<a class="button" href="([^"]+)">Sign in</a>', html)
    assert link is not None
    assert URL(link.group(1)).query["rd"] == "/form"


async def test_hostile_rd_from_the_request_path_is_not_echoed(stack: Stack):
    resp = await stack.get("//evil.example/x", **BROWSER)
    assert resp.status == 302
    assert URL(resp.headers["Location"]).query["rd"] == "/"


async def test_session_identity_reaches_upstream_and_client_copies_do_not(stack: Stack):
    session = await sign_in(stack.authgate)
    spoofed = {
        "X-User": "admin",
        "x_user": "admin",
        "X-Email": "admin@evil.example",
        "X-Groups": "admins",
        "X-Roles": "admin",
        "X-User-Id": "admin",
        "X-User-Name": "admin",
        "X-Auth-Connection": "admin",
        "X-Organization": "admin",
        "X-Authgate-Assertion": "admin",
        "X-Auth-Request-User": "admin",
        "Remote-User": "admin",
        "X-Remote-User": "admin",
        "X-Real-IP": "admin",
    }
    body = await stack.upstream_saw("/hello?x=1", **stack.cookie(session), **spoofed)
    seen = body["headers"]
    assert [v for _, v in seen if "admin" in v] == []
    assert [k for k, _ in seen if "_" in k] == []
    headers = dict(seen)
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-Email"] == "alice@example.com"
    assert headers["X-Groups"] == "Engineering"
    assert headers["X-Roles"] == "viewer"
    assert headers["X-User-Id"] == session.user_id
    assert headers["X-User-Name"] == "Alice Example"
    assert headers["X-Auth-Connection"] == "corp"
    assert headers["X-Real-IP"] == "127.0.0.1", "nginx's own view of the peer"
    assert "X-Auth-Request-User" not in headers
    assert "X-Organization" not in headers, "the connection has no organization"
    assert body["raw_path"] == "/hello?x=1"
    jwks = await (await stack.get("/_authgate/jwks.json")).json()
    token = jwt.decode(headers["X-Authgate-Assertion"], KeySet.import_key_set(jwks))
    assert token.claims["sub"] == session.user_id
    assert token.claims["email"] == "alice@example.com"


async def test_empty_identity_fields_still_clear_the_client_copy(stack: Stack):
    session = await sign_in(stack.authgate, email=None, name=None, groups=())
    body = await stack.upstream_saw(
        "/hello",
        **stack.cookie(session),
        **{"X-Email": "admin@evil.example", "X-User-Name": "admin", "X-Groups": "admins"},
    )
    names = {k.lower() for k, _ in body["headers"]}
    assert {"x-email", "x-user-name", "x-groups"}.isdisjoint(names)


async def test_the_auth_location_is_not_reachable_from_outside(stack: Stack):
    resp = await stack.get("/_authgate/auth", **{"X-Original-URI": "/public/x"})
    assert resp.status == 404


async def test_group_restricted_location(stack: Stack):
    alice = await sign_in(stack.authgate)
    resp = await stack.get("/admin/panel", **stack.cookie(alice), **BROWSER)
    await refusal_page(resp, 403, "forbidden")
    assert "X-Upstream" not in resp.headers
    assert (await stack.get("/elsewhere", **stack.cookie(alice))).status == 200
    bob = await sign_in(stack.authgate, BOB)
    body = await stack.upstream_saw("/admin/panel", **stack.cookie(bob))
    assert dict(body["headers"])["X-Groups"] == "admins"


@pytest.mark.parametrize("path", ["/Admin/panel", "/ADMIN/panel", "/aDmIn/x?y=1"])
async def test_group_restricted_location_in_any_case(stack: Stack, path: str):
    """For an app on a case-insensitive file system or router, /Admin/ is /admin/."""
    alice = await sign_in(stack.authgate)
    resp = await stack.get(path, **stack.cookie(alice), **BROWSER)
    assert resp.status == 403
    assert "X-Upstream" not in resp.headers
    bob = await sign_in(stack.authgate, BOB)
    body = await stack.upstream_saw(path, **stack.cookie(bob))
    assert dict(body["headers"])["X-Groups"] == "admins"


async def test_a_refused_api_call_gets_authgate_json_not_nginx_html(stack: Stack):
    alice = await sign_in(stack.authgate)
    resp = await stack.get("/admin/panel", **stack.cookie(alice), **API)
    assert resp.status == 403
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"] == "forbidden"
    assert_nginx_request_id(body["correlation_id"], resp)


async def test_the_client_chooses_neither_the_reason_nor_the_correlation_id(stack: Stack):
    alice = await sign_in(stack.authgate)
    forged = {"X-Authgate-Reason": "unauthenticated", "X-Request-Id": "call-0800-evil"}
    resp = await stack.get("/admin/panel", **stack.cookie(alice), **BROWSER, **forged)
    html = await refusal_page(resp, 403, "forbidden")
    assert "call-0800-evil" not in html
    resp = await stack.get("/api/items", **API, **forged)
    assert (await resp.json())["correlation_id"] != "call-0800-evil"


@pytest.mark.parametrize("reason", ["unauthenticated", "forbidden"])
async def test_the_refusal_location_is_not_reachable_from_outside(stack: Stack, reason: str):
    resp = await stack.get("/_authgate/refused", **BROWSER, **{"X-Authgate-Reason": reason})
    assert resp.status == 404
    assert "X-Authgate-Reason" not in resp.headers


async def test_chromium_sees_authgate_refusal_page_through_nginx(stack: Stack):
    """A person outside the location's group sees why and the id to quote, not "403 Forbidden"."""
    alice = await sign_in(stack.authgate)
    async with async_chromium() as browser:
        await browser.add_cookies(
            [
                {
                    "name": stack.authgate.app[STATE].cookies.session_name,
                    "value": alice.id,
                    "domain": "127.0.0.1",
                    "path": "/",
                    "secure": True,
                }
            ]
        )
        page = await browser.new_page()
        await page.set_viewport_size({"width": 1280, "height": 800})
        answer = await page.goto(str(stack.url("/admin/panel")))
        assert answer is not None and answer.status == 403
        await expect(page.get_by_role("heading", level=1)).to_have_text("We couldn't let you in")
        await expect(page.locator("#reason")).to_have_text("forbidden")
        await expect(page.locator("#correlation-id")).to_have_text(re.compile(r"^[0-9a-f]{32}$"))
        assert await page.locator("#correlation-id").inner_text() == answer.headers["x-request-id"]
        await page.screenshot(path=screenshot_path("nginx-forbidden"), full_page=True)
        await browser.clear_cookies()
        await page.goto(str(stack.url("/reports?q=1")))
        # Sent to sign in at the only connection, whose IdP this test does not run.
        assert URL(page.url).path == "/_authgate/oidc/corp/login"
        assert URL(page.url).query["rd"] == "/reports?q=1"
        await expect(page.locator("#reason")).to_have_text("metadata_unavailable")
        await expect(page.locator("#operator-hint code")).to_have_text("authgate test CONNECTION")
        await expect(page.locator("#operator-hint")).not_to_contain_text("`")
        await page.screenshot(path=screenshot_path("nginx-metadata-unavailable"), full_page=True)


async def test_public_paths_need_no_session(stack: Stack):
    body = await stack.upstream_saw("/public/logo.png", **API)
    assert "X-User" not in dict(body["headers"])
    await stack.upstream_saw("/health", **API)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/public/../secret",
        "/public/%2e%2e/secret",
        "/public/%2E%2E/secret",
        "/public;x/../secret",
        "/public/..;/secret",
        "/public%2f..%2fsecret",
        "/public%2F..%2Fsecret",
        "/public/%252e%252e/secret",
        "/public\\..\\secret",
        "//secret",
        "//public/secret",
        "/secret/../public/x",
        "/secret/%2e%2e/public/x",
        "/secret/..;/public/x",
        "/health/",
        "/health/../secret",
        "/healthz",
    ],
)
async def test_public_path_bypasses_need_a_session(stack: Stack, raw_path: str):
    resp = await stack.get(raw_path, **API)
    assert resp.status == 401, raw_path
    assert (await resp.json())["error"] == "unauthenticated"


async def test_oauth2_proxy_compat_headers(stack_factory: Callable[..., Any]):
    async with stack_factory(COMPAT_SITE, headers={"oauth2_proxy_compat": True}) as stack:
        session = await sign_in(stack.authgate)
        body = await stack.upstream_saw(
            "/hello",
            **stack.cookie(session),
            **{"X-Auth-Request-User": "admin", "X-Auth-Request-Groups": "admins"},
        )
        headers = dict(body["headers"])
        assert headers["X-Auth-Request-User"] == "alice@example.com"
        assert headers["X-Auth-Request-Email"] == "alice@example.com"
        assert headers["X-Auth-Request-Groups"] == "Engineering"
        assert headers["X-Auth-Request-Preferred-Username"] == "alice@example.com"
        assert [v for _, v in body["headers"] if "admin" in v] == []
        resp = await stack.get("/hello", **BROWSER)
        assert resp.status == 302
        assert URL(resp.headers["Location"]).query["rd"] == "/hello"
        resp = await stack.get("/hello", **API)
        body = await resp.json()
        assert (resp.status, body["error"]) == (401, "unauthenticated")
        assert_nginx_request_id(body["correlation_id"], resp)
        posted = await stack.http.post(stack.url("/form"), headers=BROWSER, allow_redirects=False)
        await refusal_page(posted, 401, "unauthenticated")
        assert (await stack.get("/_authgate/refused", **BROWSER)).status == 404


async def test_logout_through_nginx_revokes_the_cookie(stack: Stack):
    session = await sign_in(stack.authgate)
    await stack.upstream_saw("/hello", **stack.cookie(session))
    resp = await stack.get("/_authgate/logout", **stack.cookie(session), **BROWSER, **TYPED)
    assert resp.status == 200
    assert "Set-Cookie" in resp.headers
    assert await stack.authgate.app[STATE].sessions.load(session.id) is None
    again = await stack.get("/hello", **stack.cookie(session), **API)
    assert again.status == 401
    assert "X-Upstream" not in again.headers
