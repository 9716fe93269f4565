"""Every refusal under authgate's prefix is a page for a browser and JSON for an API client.

A browser is told apart by `Accept: text/html` or `Sec-Fetch-Mode: navigate`
(`wants_html_from`); both kinds of caller get the reason code and the
correlation id, and the reason also travels in `X-Authgate-Reason`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from yarl import URL

from authgate.app import build_state, create_app
from authgate.session.memory import MemoryStore
from authgate.settings import Settings
from authgate.web.middlewares import error_pages, request_context
from authgate.web.state import STATE
from tests.conftest import sign_in

BROWSERS = [{"Accept": "text/html,application/xhtml+xml"}, {"Sec-Fetch-Mode": "navigate"}]
API = {"Accept": "application/json"}
# (method, path, status, reason): refusals of authgate's own routes, with no session.
REFUSALS = [
    ("GET", "/_authgate/nonexistent", 404, "not_found"),
    ("GET", "/_authgate/admin/nothing", 404, "not_found"),
    ("GET", "/_authgate/setup/no-such-token", 403, "setup_link_invalid"),
    ("POST", "/_authgate/healthz", 404, "not_found"),
    ("PUT", "/_authgate/login", 404, "not_found"),
    ("DELETE", "/_authgate/logout", 404, "not_found"),
    ("POST", "/_authgate/jwks.json", 404, "not_found"),
    ("GET", "/_authgate/saml/no-such-connection/metadata", 404, "not_found"),
    ("GET", "/_authgate/oidc/no-such-connection/login", 403, "invalid_request"),
    ("GET", "/_authgate/userinfo", 401, "unauthenticated"),
    ("GET", "/_authgate/auth", 401, "unauthenticated"),
    ("GET", "/_authgate/refused", 403, "forbidden"),
    ("POST", "/protected/form", 401, "unauthenticated"),
]


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> Callable[..., Any]:
    async def make(**overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(settings_factory(**overrides), MemoryStore()))

    return make


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> TestClient:
    return await make_client()


async def assert_page(resp: ClientResponse, status: int, reason: str) -> str:
    html = await resp.text()
    assert resp.status == status, html
    assert resp.content_type == "text/html"
    assert resp.headers["X-Authgate-Reason"] == reason
    assert resp.headers["Cache-Control"] == "no-store"
    assert f'<code id="reason">{reason}</code>' in html
    cid = resp.headers["X-Request-Id"]
    assert f'<code id="correlation-id">{cid}</code>' in html
    return html


async def assert_json(resp: ClientResponse, status: int, reason: str) -> dict[str, Any]:
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert resp.headers["X-Authgate-Reason"] == reason
    body = await resp.json()
    assert body["error"] == reason
    assert body["correlation_id"] == resp.headers["X-Request-Id"]
    return body


@pytest.mark.parametrize("browser", BROWSERS, ids=["accept", "navigate"])
@pytest.mark.parametrize(("method", "path", "status", "reason"), REFUSALS)
async def test_a_browser_gets_a_page(
    client: TestClient, browser: dict[str, str], method: str, path: str, status: int, reason: str
):
    resp = await client.request(method, path, headers=browser, allow_redirects=False)
    html = await assert_page(resp, status, reason)
    assert "no-such" not in html, "an error page never repeats the request"


@pytest.mark.parametrize(("method", "path", "status", "reason"), REFUSALS)
async def test_an_api_client_gets_json(
    client: TestClient, method: str, path: str, status: int, reason: str
):
    resp = await client.request(method, path, headers=API, allow_redirects=False)
    body = await assert_json(resp, status, reason)
    assert "no-such" not in str(body)


async def test_the_unauthenticated_page_links_to_sign_in_with_the_way_back(client: TestClient):
    resp = await client.post("/reports/new?x=1", headers=BROWSERS[1], allow_redirects=False)
    html = await assert_page(resp, 401, "unauthenticated")
    assert resp.headers["WWW-Authenticate"] == 'Cookie realm="authgate"'
    link = re.search(r'<a class="button" href="([^"]+)">Sign in</a>', html)
    assert link is not None
    assert URL(link.group(1).replace("&amp;", "&")).query["rd"] == "/reports/new?x=1"


async def test_forward_auth_refusals_are_pages_for_a_browser(client: TestClient):
    """Traefik and others show /auth's answer itself: it must be a page for a person."""
    headers = {**BROWSERS[0], "X-Original-URI": "/admin/x"}
    resp = await client.get("/_authgate/auth", headers=headers)
    await assert_page(resp, 401, "unauthenticated")
    assert URL(resp.headers["X-Authgate-Redirect"]).query["rd"] == "/admin/x"
    await sign_in(client)
    resp = await client.get("/_authgate/auth?allowed_groups=admins", headers=headers)
    await assert_page(resp, 403, "forbidden")
    resp = await client.get("/_authgate/auth?allowed_groups=admins", headers=API)
    await assert_json(resp, 403, "forbidden")


# -- the refusal page a front proxy shows for /auth (conf/nginx: error_page 401 403) --------------


@pytest.mark.parametrize("browser", [True, False], ids=["page", "json"])
async def test_refused_shows_the_reason_and_request_id_nginx_copied(
    client: TestClient, browser: bool
):
    headers = {
        **(BROWSERS[0] if browser else API),
        "X-Authgate-Reason": "unauthenticated",
        "X-Request-Id": "0123456789abcdef",
        "X-Original-URI": "/reports?q=1",
    }
    resp = await client.get("/_authgate/refused", headers=headers)
    assert resp.headers["X-Request-Id"] == "0123456789abcdef"
    if browser:
        await assert_page(resp, 401, "unauthenticated")
    else:
        body = await assert_json(resp, 401, "unauthenticated")
        assert URL(body["login_url"]).query["rd"] == "/reports?q=1"
    resp = await client.get(
        "/_authgate/refused", headers={**headers, "X-Authgate-Reason": "forbidden"}
    )
    await (assert_page if browser else assert_json)(resp, 403, "forbidden")


@pytest.mark.parametrize(
    "reason", ["store_unavailable", "email_conflict", "Unauthenticated", "<b>x</b>", ""]
)
async def test_refused_renders_no_reason_but_the_two_of_forward_auth(
    client: TestClient, reason: str
):
    headers = {**BROWSERS[0], "X-Authgate-Reason": reason}
    html = await assert_page(
        await client.get("/_authgate/refused", headers=headers), 403, "forbidden"
    )
    assert "<b>x" not in html


async def test_refused_believes_the_reason_only_from_a_trusted_proxy(
    make_client: Callable[..., Any],
):
    untrusted = await make_client(trusted_proxies=["10.0.0.0/8"])
    headers = {
        **BROWSERS[0],
        "X-Authgate-Reason": "unauthenticated",
        "X-Request-Id": "chosen-by-the-client",
    }
    resp = await untrusted.get("/_authgate/refused", headers=headers)
    await assert_page(resp, 403, "forbidden")
    assert resp.headers["X-Request-Id"] != "chosen-by-the-client"


# -- aiohttp's router: a 404 or 405 it raises itself ------------------------------------------


@pytest.fixture
async def router_client(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> TestClient:
    """authgate's two outer middlewares around a router without a catch-all route."""

    async def only_get(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[request_context, error_pages])
    app[STATE] = build_state(settings_factory(), MemoryStore())
    app.router.add_get("/only-get", only_get)
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [("GET", "/nowhere", 404, "not_found"), ("POST", "/only-get", 405, "method_not_allowed")],
)
async def test_router_refusals_are_pages_and_json(
    router_client: TestClient, method: str, path: str, status: int, reason: str
):
    page = await router_client.request(method, path, headers=BROWSERS[1])
    html = await assert_page(page, status, reason)
    assert "Page not found" in html
    api = await router_client.request(method, path, headers=API)
    await assert_json(api, status, reason)
    if status == 405:
        assert page.headers["Allow"] == api.headers["Allow"] == "GET,HEAD"
