"""No open redirect: `rd` and RelayState end on this site or on an explicitly allowed host.

Checked on `RedirectPolicy.safe` itself and end to end: the login page, the
links it hands to each connection, and the final redirect of `complete_login`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from authgate.app import create_app
from authgate.identity import Identity
from authgate.session.memory import MemoryStore
from authgate.settings import Settings
from authgate.urls import MAX_REDIRECT_LENGTH, RedirectPolicy
from authgate.web.signin import complete_login

POLICY = RedirectPolicy.build(
    "https://app.example.com", ["partner.example.net", ".corp.example.org"]
)
ALLOWED_HOSTS = {"allowed_redirect_hosts": ["partner.example.net", ".corp.example.org"]}

HOSTILE = [
    "//evil",
    "//evil.example/path",
    "///evil",
    "/\\evil",
    "\\/evil",
    "\\\\evil",
    "/\\/evil",
    "https:evil",
    "https:/evil",
    "https:///evil",
    "%2F%2Fevil",
    "/%2F%2Fevil",
    "/%2f/evil",
    "/%5Cevil",
    "/%5C%5Cevil",
    "/%252F%252Fevil",
    "/%25252F%25252Fevil",
    "/%2525252525252F%2F",
    "https://app@evil",
    "https://app.example.com@evil.com",
    "https://app.example.com:443@evil.com",
    "https://app.example.com%40evil.com",
    "https://evil.com\\@app.example.com",
    "https://evil.com#@app.example.com",
    "https://evil.com?@app.example.com",
    "https://app.example.com.evil",
    "https://app.example.com.evil.com/",
    "https://evilapp.example.com/",
    "https://app.example.com:bad/",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "javascript://app.example.com/%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "ftp://app.example.com/",
    "\t/evil",
    "\n/evil",
    " /evil",
    "/\t/evil",
    "/\n/evil",
    "/%09/evil",
    "/%0a/evil",
    "/%0D%0ALocation:%20https://evil",
    "/x\r\nSet-Cookie: a=b",
    "/%00//evil",
    "http://[::1]",
    "http://[::1]/",
    "http://127.0.0.1/",
    "http://localhost/",
    "/\uff0f\uff0fevil",
    "\uff0f\uff0fevil",
    "https://app.example.com\u3002evil.com/",
    "/" + "a" * MAX_REDIRECT_LENGTH,
    "https://corp.example.org/",
    "https://evilcorp.example.org/",
    "https://corp.example.org.evil/",
    "https://partner.example.net.evil/",
    "",
    "evil",
    "evil.com/path",
]

ALLOWED = [
    "/",
    "/reports",
    "/reports/q?x=1&y=a%20b",
    "/search?q=%2F%2Fevil",
    "/a/b#section",
    "/%7Euser/",
    "https://app.example.com/",
    "https://app.example.com/x?y=1",
    "https://APP.Example.com/x",
    "https://app.example.com:8443/x",
    "http://app.example.com/x",
    "https://partner.example.net/welcome",
    "https://a.corp.example.org/",
    "https://a.b.corp.example.org/deep",
]


@pytest.mark.parametrize("target", HOSTILE)
def test_hostile_targets_fall_back(target: str):
    assert POLICY.safe(target) == "/"
    assert POLICY.safe(target, fallback="/home") == "/home"


@pytest.mark.parametrize("target", ALLOWED)
def test_local_paths_and_allowed_hosts_pass_unchanged(target: str):
    assert POLICY.safe(target) == target


def test_none_falls_back():
    assert POLICY.safe(None) == "/"


def test_leading_dot_means_subdomains_only():
    """`.corp.example.org` allows any depth below it, never the apex or a look-alike."""
    policy = RedirectPolicy.build("https://app.example.com", [".corp.example.org"])
    assert policy.safe("https://x.corp.example.org/") == "https://x.corp.example.org/"
    assert policy.safe("https://x.y.corp.example.org/") == "https://x.y.corp.example.org/"
    assert policy.safe("https://corp.example.org/") == "/"
    assert policy.safe("https://xcorp.example.org/") == "/"
    apex_too = RedirectPolicy.build(
        "https://app.example.com", [".corp.example.org", "corp.example.org"]
    )
    assert apex_too.safe("https://corp.example.org/") == "https://corp.example.org/"


def test_without_allowed_hosts_only_the_public_host_passes():
    policy = RedirectPolicy.build("https://app.example.com", [])
    assert policy.safe("https://app.example.com/x") == "https://app.example.com/x"
    assert policy.safe("https://partner.example.net/") == "/"


# ---- end to end through the web layer ----


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> Callable[..., Any]:
    async def make(**overrides: Any) -> TestClient:
        overrides.setdefault("access", ALLOWED_HOSTS)
        app = create_app(settings_factory(**overrides), MemoryStore())
        app.router.add_get("/__test/complete", _complete_login_route)
        return await aiohttp_client(app)

    return make


async def _complete_login_route(request: web.Request) -> web.StreamResponse:
    """What a protocol handler does once the IdP's answer is verified."""
    identity = Identity(
        connection="corp", subject="sub-1", email="alice@example.com", email_verified=True
    )
    return await complete_login(request, identity, request.query["rd"])


TWO_CONNECTIONS = [
    {
        "id": "corp",
        "name": "Corp",
        "type": "oidc",
        "issuer": "https://idp.example.com",
        "client_id": "authgate",
        "client_secret": "s3cret",
    },
    {
        "id": "partner",
        "name": "Partner",
        "type": "oidc",
        "issuer": "https://idp.partner.example",
        "client_id": "authgate",
        "client_secret": "s3cret",
        "domains": ["partner.example"],
    },
]


async def _rd_of_single_connection_redirect(client: TestClient, rd: str) -> str:
    resp = await client.get("/_authgate/login", params={"rd": rd}, allow_redirects=False)
    assert resp.status == 302
    location = URL(resp.headers["Location"])
    assert location.path == "/_authgate/oidc/corp/login"
    return location.query["rd"]


@pytest.mark.parametrize("rd", HOSTILE)
async def test_login_page_does_not_carry_a_hostile_rd(make_client: Callable[..., Any], rd: str):
    client = await make_client()
    assert await _rd_of_single_connection_redirect(client, rd) == "/"


@pytest.mark.parametrize("rd", ALLOWED)
async def test_login_page_carries_a_safe_rd(make_client: Callable[..., Any], rd: str):
    client = await make_client()
    assert await _rd_of_single_connection_redirect(client, rd) == rd


def _links(html: str) -> list[URL]:
    return [URL(unescape(href)) for href in re.findall(r'href="([^"]+/login\?[^"]*)"', html)]


@pytest.mark.parametrize(
    ("rd", "carried"),
    [("//evil", "/"), ("https://app.example.com@evil.com", "/"), ("/reports?x=1", "/reports?x=1")],
)
async def test_login_page_links_and_discovery_carry_only_a_safe_rd(
    make_client: Callable[..., Any], rd: str, carried: str
):
    client = await make_client(connections=TWO_CONNECTIONS)
    resp = await client.get("/_authgate/login", params={"rd": rd})
    assert resp.status == 200
    html = await resp.text()
    links = _links(html)
    assert [link.path for link in links] == [
        "/_authgate/oidc/corp/login",
        "/_authgate/oidc/partner/login",
    ]
    assert {link.query["rd"] for link in links} == {carried}
    assert f'name="rd" value="{carried}"' in unescape(html)
    found = await client.get(
        "/_authgate/login",
        params={"rd": rd, "email": "bob@partner.example"},
        allow_redirects=False,
    )
    assert URL(found.headers["Location"]).query["rd"] == carried


@pytest.mark.parametrize("rd", HOSTILE)
async def test_complete_login_never_redirects_off_site(make_client: Callable[..., Any], rd: str):
    client = await make_client()
    resp = await client.get("/__test/complete", params={"rd": rd}, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/"
    assert "Set-Cookie" in resp.headers


@pytest.mark.parametrize("rd", ALLOWED)
async def test_complete_login_returns_to_a_safe_rd(make_client: Callable[..., Any], rd: str):
    client = await make_client()
    resp = await client.get("/__test/complete", params={"rd": rd}, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == rd


async def test_proxy_challenge_never_carries_a_hostile_path(make_client: Callable[..., Any]):
    client = await make_client()
    url = URL("/%2F%2Fevil.example", encoded=True)
    resp = await client.get(url, headers={"Accept": "text/html"}, allow_redirects=False)
    assert resp.status == 302
    assert URL(resp.headers["Location"]).query["rd"] == "/"
