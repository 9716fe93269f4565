"""The development IdP over HTTP: loopback only, marked everywhere, strict at every endpoint."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from authgate.devidp import (
    DevIdp,
    DevIdpConfig,
    NotLoopback,
    OidcClient,
    create_app,
    require_loopback,
)
from authgate.devidp.oidc import s256
from authgate.devidp.pages import MARK, Pages
from tests.servers import require_binary

BASE = "http://127.0.0.1:4181"
REDIRECT = "http://127.0.0.1:4180/_authgate/oidc/dev-oidc/callback"
LOGOUT = "http://127.0.0.1:4180/_authgate/logout"
VERIFIER = "v" * 64


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_addresses_are_accepted(host: str):
    require_loopback(host)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "[::]", "", "192.168.1.10", "10.0.0.1", "example.com", "localhost."]
)
def test_anything_else_is_refused(host: str):
    with pytest.raises(NotLoopback) as refused:
        require_loopback(host)
    assert f"refuses to listen on {host!r}" in str(refused.value)
    assert "pass --force to override" in str(refused.value)


def test_force_overrides_with_a_marked_warning(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="authgate.devidp"):
        require_loopback("0.0.0.0", force=True)
    assert caplog.messages == [
        f"{MARK}: listening on 0.0.0.0 because --force was given: anyone who can reach it can"
        " sign in as any test user"
    ]


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> DevIdp:
    require_binary("xmlsec1")
    client = OidcClient("demo", "demo-secret", (REDIRECT,), (LOGOUT,))
    config = DevIdpConfig(base_url=BASE, clients=(client,))
    return DevIdp.create(config, Path(tmp_path_factory.mktemp("devidp-web")))


@pytest.fixture
async def web(idp: DevIdp, aiohttp_client: Callable[..., Any]) -> TestClient:
    return await aiohttp_client(create_app(idp))


def authorize_query(**changes: str | None) -> dict[str, str]:
    query: dict[str, str | None] = {
        "client_id": "demo",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email profile",
        "state": "st",
        "nonce": "nn",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
    }
    query.update(changes)
    return {k: v for k, v in query.items() if v is not None}


async def start(web: TestClient, **changes: str | None) -> str:
    """The pending sign-in id the authorization request was parked under."""
    resp = await web.get(
        "/oidc/authorize", params=authorize_query(**changes), allow_redirects=False
    )
    assert resp.status == 302
    location = urlsplit(resp.headers["Location"])
    assert location.path == "/login"
    return parse_qs(location.query)["txn"][0]


async def sign_in(web: TestClient, txn: str, email: str = "dave@partner.example") -> str:
    resp = await web.post(
        "/login", data={"txn": txn, "email": email, "password": "demo"}, allow_redirects=False
    )
    assert resp.status == 302, await resp.text()
    return resp.headers["Location"]


def assert_marked(text: str, headers: Any) -> None:
    assert f"{MARK} — for trying authgate only" in text
    assert f"· {MARK}</title>" in text
    assert headers["X-Development-IdP"] == MARK


async def test_every_page_is_marked_as_a_development_idp(web: TestClient):
    for path, status in [("/", 200), ("/login?txn=unknown", 400), ("/oidc/authorize", 400)]:
        resp = await web.get(path)
        assert resp.status == status
        assert_marked(await resp.text(), resp.headers)
    txn = await start(web)
    form = await web.get(f"/login?txn={txn}")
    assert_marked(await form.text(), form.headers)
    api = await web.get("/oidc/.well-known/openid-configuration")
    assert api.headers["X-Development-IdP"] == MARK


@pytest.mark.parametrize(
    "changes",
    [{"client_id": "nobody"}, {"redirect_uri": "https://evil.example/cb"}, {"redirect_uri": None}],
)
async def test_a_bad_client_or_redirect_uri_gets_a_page_not_a_redirect(
    web: TestClient, changes: dict[str, str | None]
):
    resp = await web.get(
        "/oidc/authorize", params=authorize_query(**changes), allow_redirects=False
    )
    assert resp.status == 400
    assert "Location" not in resp.headers
    assert "Invalid sign-in request" in await resp.text()


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"scope": "email"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
async def test_other_refusals_are_redirected_to_the_client_with_state(
    web: TestClient, changes: dict[str, str | None], error: str
):
    resp = await web.get(
        "/oidc/authorize", params=authorize_query(**changes), allow_redirects=False
    )
    assert resp.status == 302
    location = urlsplit(resp.headers["Location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    assert (query["error"], query["state"], query["iss"]) == ([error], ["st"], [BASE + "/oidc"])


async def test_prompt_none_without_a_session_is_login_required(web: TestClient):
    resp = await web.get(
        "/oidc/authorize", params=authorize_query(prompt="none"), allow_redirects=False
    )
    assert parse_qs(urlsplit(resp.headers["Location"]).query)["error"] == ["login_required"]


@pytest.mark.parametrize(
    ("method", "path", "status", "heading"),
    [
        ("GET", "/nothing-here", 404, "Not Found"),
        ("DELETE", "/login", 405, "Method Not Allowed"),
        ("GET", "/oidc/token", 405, "Method Not Allowed"),
    ],
)
async def test_router_refusals_are_marked_pages(
    web: TestClient, method: str, path: str, status: int, heading: str
):
    resp = await web.request(method, path)
    html = await resp.text()
    assert resp.status == status
    assert resp.content_type == "text/html"
    assert f"<h1>{heading}</h1>" in html
    assert_marked(html, resp.headers)
    assert "nothing-here" not in html
    if status == 405:
        assert "Allow" in resp.headers


async def test_the_sign_in_page_offers_only_the_users_of_its_protocol(web: TestClient):
    page = await (await web.get(f"/login?txn={await start(web)}")).text()
    offered = re.findall(r'name="email" value="([^"]+)"', page)
    assert offered == ["dave@partner.example", "carol@partner.example", "mallory@evil.example"]


@pytest.mark.parametrize("email", ["alice@example.com", "bob@example.com"])
async def test_a_user_of_the_other_protocol_is_told_which_button_to_use(
    web: TestClient, email: str
):
    txn = await start(web)
    resp = await web.post("/login", data={"txn": txn, "email": email, "password": "demo"})
    assert resp.status == 401
    assert f"{email} signs in with SAML: go back and use that button." in await resp.text()


async def test_the_index_says_which_protocol_each_user_signs_in_with(web: TestClient):
    page = await (await web.get("/")).text()
    assert "gets the admin role; signs in with SAML</li>" in page
    assert "gets the editor role; signs in with OpenID Connect</li>" in page
    assert "domain_not_allowed; signs in with OpenID Connect or SAML</li>" in page


async def test_a_wrong_password_is_refused_and_logged(
    web: TestClient, caplog: pytest.LogCaptureFixture
):
    txn = await start(web)
    with caplog.at_level(logging.INFO, logger="authgate.devidp"):
        resp = await web.post(
            "/login", data={"txn": txn, "email": "dave@partner.example", "password": "Demo"}
        )
    assert resp.status == 401
    assert "Wrong email or password." in await resp.text()
    assert caplog.messages == [f"{MARK}: wrong email or password for 'dave@partner.example'"]


@pytest.mark.parametrize("email", ["nobody@example.com", "", "DAVE@partner.example "])
async def test_only_known_users_sign_in(web: TestClient, email: str):
    txn = await start(web)
    resp = await web.post(
        "/login", data={"txn": txn, "email": email, "password": "demo"}, allow_redirects=False
    )
    assert resp.status == (302 if email.strip().lower() == "dave@partner.example" else 401)


async def test_sign_in_answers_with_a_single_use_code_and_an_idp_session(web: TestClient):
    txn = await start(web)
    location = await sign_in(web, txn)
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(REDIRECT + "?")
    assert (query["state"], query["iss"]) == (["st"], [BASE + "/oidc"])
    assert web.session.cookie_jar.filter_cookies(web.make_url("/"))["devidp_session"]
    reuse = {"txn": txn, "email": "bob@example.com", "password": "demo"}
    again = await web.post("/login", data=reuse)
    assert again.status == 400
    assert "Sign-in expired" in await again.text()


async def test_the_idp_session_offers_continue_unless_prompt_login(web: TestClient):
    await sign_in(web, await start(web))
    txn = await start(web)
    page = await (await web.get(f"/login?txn={txn}")).text()
    assert "Continue as Dave Partner (dave@partner.example)" in page
    resp = await web.post("/login", data={"txn": txn, "continue": "1"}, allow_redirects=False)
    assert resp.headers["Location"].startswith(REDIRECT + "?code=")
    forced = await start(web, prompt="login")
    assert "Continue as" not in await (await web.get(f"/login?txn={forced}")).text()
    refused = await web.post("/login", data={"txn": forced, "continue": "1"})
    assert refused.status == 401


async def test_cancel_sends_access_denied(web: TestClient):
    txn = await start(web)
    resp = await web.post("/login", data={"txn": txn, "cancel": "1"}, allow_redirects=False)
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert (query["error"], query["state"]) == (["access_denied"], ["st"])


async def test_token_errors_are_json_with_the_right_status(web: TestClient):
    code = parse_qs(urlsplit(await sign_in(web, await start(web))).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
    }
    wrong = base64.b64encode(b"demo:wrong").decode()
    resp = await web.post("/oidc/token", data=form, headers={"Authorization": f"Basic {wrong}"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="devidp"'
    assert resp.headers["Cache-Control"] == "no-store"
    assert (await resp.json())["error"] == "invalid_client"
    good = base64.b64encode(b"demo:demo-secret").decode()
    ok = await web.post("/oidc/token", data=form, headers={"Authorization": f"Basic {good}"})
    tokens = await ok.json()
    assert ok.status == 200
    replay = await web.post("/oidc/token", data=form, headers={"Authorization": f"Basic {good}"})
    assert (replay.status, (await replay.json())["error"]) == (400, "invalid_grant")
    info = await web.get(
        "/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert (await info.json())["email"] == "dave@partner.example"
    denied = await web.get("/oidc/userinfo", headers={"Authorization": "Bearer nope"})
    assert denied.status == 401
    assert denied.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


async def test_end_session_ends_the_idp_session_and_returns_to_a_registered_uri(
    web: TestClient,
):
    await sign_in(web, await start(web))
    resp = await web.get(
        "/oidc/end_session",
        params={"client_id": "demo", "post_logout_redirect_uri": LOGOUT, "state": "x"},
        allow_redirects=False,
    )
    assert (resp.status, resp.headers["Location"]) == (302, LOGOUT + "?state=x")
    txn = await start(web)
    assert "Continue as" not in await (await web.get(f"/login?txn={txn}")).text()
    hostile = await web.get(
        "/oidc/end_session",
        params={"client_id": "demo", "post_logout_redirect_uri": "https://evil.example/"},
        allow_redirects=False,
    )
    assert hostile.status == 400
    assert "Location" not in hostile.headers


@pytest.mark.parametrize(
    ("method", "path", "data", "words"),
    [
        ("GET", "/saml/sso", None, "No SAMLRequest."),
        ("GET", "/saml/sso?SAMLRequest=bm90LXhtbA%3D%3D", None, "the AuthnRequest was refused"),
        ("POST", "/saml/sso", {"SAMLRequest": "PHg+PC94Pg=="}, "the AuthnRequest was refused"),
        ("GET", "/saml/slo", None, "No LogoutRequest."),
        ("POST", "/saml/slo", {"SAMLRequest": "%%%"}, "the LogoutRequest was refused"),
    ],
)
async def test_bad_saml_messages_get_a_page(
    web: TestClient, method: str, path: str, data: dict[str, str] | None, words: str
):
    resp = await web.request(method, path, data=data)
    assert resp.status == 400
    assert words in await resp.text()


def test_the_auto_post_page_allows_exactly_its_own_script():
    page = Pages().auto_post("http://127.0.0.1:4180/acs", {"SAMLResponse": "abc"}, "response")
    html = page.text or ""
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    policy = page.headers["Content-Security-Policy"]
    assert policy.endswith(f"script-src 'sha256-{digest}'")
    assert "default-src 'none'" in policy
    assert '<input type="hidden" name="SAMLResponse" value="abc">' in html
