"""`/auth`, `/userinfo` and `/jwks.json`: what a front proxy and an upstream can rely on.

Every test runs over both front ends of the production listener (`serve`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet
from yarl import URL

from authgate.app import create_app
from authgate.session.memory import MemoryStore
from authgate.settings import Settings
from authgate.web.state import STATE
from tests.conftest import cookie_header, sign_in

AUTH = "/_authgate/auth"
PUBLIC = {"public_paths": ["/public/"]}
BROWSER = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
IDENTITY_HEADERS = (
    "X-User",
    "X-Email",
    "X-User-Name",
    "X-User-Id",
    "X-Groups",
    "X-Roles",
    "X-Auth-Connection",
    "X-Authgate-Assertion",
)


@pytest.fixture
def make_client(
    serve: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> Callable[..., Any]:
    async def make(**overrides: Any) -> TestClient:
        overrides.setdefault("access", PUBLIC)
        return await serve(create_app(settings_factory(**overrides), MemoryStore()))

    return make


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> TestClient:
    return await make_client()


@pytest.fixture
async def untrusted(make_client: Callable[..., Any]) -> TestClient:
    """The test client connects from 127.0.0.1, which this authgate does not trust."""
    return await make_client(trusted_proxies=["10.0.0.0/8"])


@pytest.mark.parametrize("header", ["X-Original-URI", "X-Forwarded-Uri"])
async def test_trusted_proxy_names_the_original_public_path(client: TestClient, header: str):
    resp = await client.get(AUTH, headers={header: "/public/logo.png"})
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert await resp.read() == b""
    assert not set(IDENTITY_HEADERS) & set(resp.headers)


@pytest.mark.parametrize("header", ["X-Original-URI", "X-Forwarded-Uri"])
async def test_untrusted_caller_cannot_make_a_path_public(untrusted: TestClient, header: str):
    resp = await untrusted.get(
        AUTH, headers={header: "/public/logo.png", "X-Forwarded-For": "10.0.0.1"}
    )
    assert resp.status == 401
    body = await resp.json()
    assert body["error"] == "unauthenticated"
    assert URL(body["login_url"]).query["rd"] == "/"


async def test_untrusted_caller_cannot_pick_the_method(untrusted: TestClient):
    resp = await untrusted.get(
        AUTH, headers={**BROWSER, "X-Original-URI": "/x", "X-Original-Method": "POST"}
    )
    assert resp.status == 401
    assert resp.headers["X-Authgate-Redirect"] == "/_authgate/login?rd=%2F"


async def test_public_path_bypass_from_a_trusted_proxy_still_needs_a_session(
    client: TestClient,
):
    resp = await client.get(AUTH, headers={"X-Original-URI": "/public/..;/admin"})
    assert resp.status == 401


async def test_401_for_an_api_call(client: TestClient):
    resp = await client.get(AUTH, headers={"X-Original-URI": "/api/items?page=2"})
    assert resp.status == 401
    body = await resp.json()
    assert body == {
        "error": "unauthenticated",
        "login_url": "/_authgate/login?rd=%2Fapi%2Fitems%3Fpage%3D2",
        "correlation_id": resp.headers["X-Request-Id"],
    }
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["WWW-Authenticate"] == 'Cookie realm="authgate"'
    assert resp.headers["X-Authgate-Login"] == body["login_url"]
    assert "X-Authgate-Redirect" not in resp.headers
    assert not set(IDENTITY_HEADERS) & set(resp.headers)


async def test_401_for_a_browser_navigation_says_redirect(client: TestClient):
    resp = await client.get(AUTH, headers={**BROWSER, "X-Original-URI": "/reports"})
    assert resp.status == 401
    assert resp.headers["X-Authgate-Redirect"] == "/_authgate/login?rd=%2Freports"


@pytest.mark.parametrize(
    "headers",
    [
        {**BROWSER, "X-Original-Method": "POST"},
        {**BROWSER, "X-Forwarded-Method": "DELETE"},
        {"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"},
        {"Accept": "*/*"},
    ],
)
async def test_401_without_redirect_for_non_navigations(client: TestClient, headers: dict):
    resp = await client.get(AUTH, headers={**headers, "X-Original-URI": "/form"})
    assert resp.status == 401
    assert "X-Authgate-Redirect" not in resp.headers


@pytest.mark.parametrize(
    "original", ["//evil.example/", "/\\evil.example", "https://evil.example/"]
)
async def test_401_never_carries_a_hostile_return_path(client: TestClient, original: str):
    resp = await client.get(AUTH, headers={**BROWSER, "X-Original-URI": original})
    assert resp.headers["X-Authgate-Redirect"] == "/_authgate/login?rd=%2F"


async def test_unknown_or_ended_session_is_401(client: TestClient):
    resp = await client.get(AUTH, headers=cookie_header(client, "not-a-session"))
    assert resp.status == 401
    session = await sign_in(client)
    await client.app[STATE].sessions.delete(session)
    resp = await client.get(AUTH, headers=cookie_header(client, session.id))
    assert resp.status == 401


async def test_200_carries_the_identity(client: TestClient):
    session = await sign_in(client)
    resp = await client.get(
        AUTH, headers={**cookie_header(client, session.id), "X-Original-URI": "/app"}
    )
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert await resp.read() == b""
    assert resp.headers["X-User"] == "alice@example.com"
    assert resp.headers["X-Email"] == "alice@example.com"
    assert resp.headers["X-User-Name"] == "Alice Example"
    assert resp.headers["X-User-Id"] == session.user_id
    assert resp.headers["X-Groups"] == "Engineering"
    assert resp.headers["X-Roles"] == "viewer"
    assert resp.headers["X-Auth-Connection"] == "corp"
    assert "X-Auth-Request-User" not in resp.headers
    keys = KeySet.import_key_set(await (await client.get("/_authgate/jwks.json")).json())
    token = jwt.decode(resp.headers["X-Authgate-Assertion"], keys)
    assert token.claims["sub"] == session.user_id
    assert token.claims["groups"] == ["Engineering"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("allowed_groups=admins", 403),
        ("allowed_groups=engineering", 403),
        ("allowed_groups=admins,Engineering", 200),
        ("allowed_groups=Engineering", 200),
        ("allowed_roles=admin", 403),
        ("allowed_roles=viewer", 200),
        ("allowed_groups=Engineering&allowed_roles=admin", 403),
        ("allowed_groups=", 200),
    ],
)
async def test_per_location_narrowing(client: TestClient, query: str, status: int):
    session = await sign_in(client)
    resp = await client.get(f"{AUTH}?{query}", headers=cookie_header(client, session.id))
    assert resp.status == status
    assert resp.headers["Cache-Control"] == "no-store"
    if status == 403:
        body = await resp.json()
        assert body == {"error": "forbidden", "correlation_id": resp.headers["X-Request-Id"]}
        assert not set(IDENTITY_HEADERS) & set(resp.headers)


async def test_oauth2_proxy_compat_headers(make_client: Callable[..., Any]):
    client = await make_client(headers={"oauth2_proxy_compat": True})
    session = await sign_in(client)
    resp = await client.get(AUTH, headers=cookie_header(client, session.id))
    assert resp.headers["X-Auth-Request-User"] == "alice@example.com"
    assert resp.headers["X-Auth-Request-Email"] == "alice@example.com"
    assert resp.headers["X-Auth-Request-Groups"] == "Engineering"
    assert resp.headers["X-Auth-Request-Preferred-Username"] == "alice@example.com"
    assert resp.headers["X-User"] == "alice@example.com"


async def test_renamed_and_disabled_headers(make_client: Callable[..., Any]):
    client = await make_client(headers={"user": "X-Remote-User", "email": None})
    session = await sign_in(client)
    resp = await client.get(AUTH, headers=cookie_header(client, session.id))
    assert resp.headers["X-Remote-User"] == "alice@example.com"
    assert "X-User" not in resp.headers
    assert "X-Email" not in resp.headers


async def test_userinfo(client: TestClient):
    session = await sign_in(client)
    resp = await client.get("/_authgate/userinfo", headers=cookie_header(client, session.id))
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body == {
        "user_id": session.user_id,
        "username": "alice@example.com",
        "email": "alice@example.com",
        "name": "Alice Example",
        "groups": ["Engineering"],
        "roles": ["viewer"],
        "connection": "corp",
        "organization": None,
        "expires_at": int(session.expires_at),
    }


async def test_userinfo_without_session(client: TestClient):
    resp = await client.get("/_authgate/userinfo")
    assert resp.status == 401
    assert resp.headers["Cache-Control"] == "no-store"
    assert (await resp.json())["error"] == "unauthenticated"


async def test_jwks_lists_public_keys_only(client: TestClient):
    resp = await client.get("/_authgate/jwks.json")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    keys = (await resp.json())["keys"]
    assert keys
    for key in keys:
        assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
        assert key["kid"]
        assert "d" not in key


async def test_jwks_is_empty_when_assertions_are_off(make_client: Callable[..., Any]):
    client = await make_client(headers={"assertion": {"header": None}})
    assert (await (await client.get("/_authgate/jwks.json")).json()) == {"keys": []}
    session = await sign_in(client)
    resp = await client.get(AUTH, headers=cookie_header(client, session.id))
    assert "X-Authgate-Assertion" not in resp.headers
