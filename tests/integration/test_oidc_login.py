"""OIDC login through authgate against the test provider: the accepted shapes.

Each test signs in end to end — authgate login endpoint, provider, callback,
session, upstream — with real Redis holding the state and the session.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from urllib.parse import unquote_plus

from joserfc.jwk import RSAKey
from yarl import URL

from authgate.web.state import STATE
from tests.conftest import UPSTREAM_HITS
from tests.oidc_op import Browser
from tests.simplesamlphp import TYPED


async def upstream_headers(browser: Browser, path: str = "/app/page") -> dict[str, str]:
    resp = await browser.gate.get(path, headers={"Accept": "application/json"})
    assert resp.status == 200, await resp.text()
    return dict((await resp.json())["headers"])


async def test_login_reaches_the_upstream_with_identity(oidc_gate, oidc_op, counted_upstream):
    browser = await oidc_gate()
    authorize = URL(await browser.start(rd="/app/page?x=1"))
    assert authorize.query["code_challenge_method"] == "S256"
    assert len(authorize.query["code_challenge"]) == 43
    assert authorize.query["scope"] == "openid email profile"
    assert authorize.query["redirect_uri"] == "http://authgate.test/_authgate/oidc/corp/callback"
    resp = await browser.callback(await browser.authorize(str(authorize)))
    assert resp.status == 302, await resp.text()
    assert resp.headers["Location"] == "/app/page?x=1"
    headers = await upstream_headers(browser, "/app/page?x=1")
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-Groups"] == "Engineering"
    assert headers["X-Auth-Connection"] == "corp"
    assert counted_upstream.app[UPSTREAM_HITS] == ["/app/page"]


async def test_client_secret_basic_form_encodes_id_and_secret(oidc_gate, oidc_op):
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    request = oidc_op.token_requests[0]
    encoded = base64.b64decode(request["headers"]["Authorization"].removeprefix("Basic ")).decode()
    assert encoded == "authgate:s3cret%3A%25%2B+%26%3Dx"
    assert unquote_plus(encoded.split(":", 1)[1]) == oidc_op.client_secret
    assert "client_secret" not in request["form"]
    assert len(request["form"]["code_verifier"]) >= 43


async def test_es256_id_token(oidc_gate, oidc_op):
    oidc_op.use_key(oidc_op.ec, "ES256")
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    assert (await upstream_headers(browser))["X-User"] == "alice@example.com"


async def test_ps256_id_token(oidc_gate, oidc_op):
    oidc_op.use_key(oidc_op.rsa, "PS256")
    assert (await (await oidc_gate()).login()).status == 302


async def test_client_secret_post(oidc_gate, oidc_op):
    browser = await oidc_gate(token_endpoint_auth_method="client_secret_post")
    assert (await browser.login()).status == 302
    request = oidc_op.token_requests[0]
    assert "Authorization" not in request["headers"]
    assert request["form"]["client_id"] == "authgate"
    assert request["form"]["client_secret"] == oidc_op.client_secret


def sent_by_post(request: dict) -> bool:
    return "Authorization" not in request["headers"] and "client_secret" in request["form"]


async def test_client_secret_post_when_discovery_lists_only_post(oidc_gate, oidc_op):
    oidc_op.auth_methods = ("client_secret_post", "private_key_jwt")
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    assert sent_by_post(oidc_op.token_requests[0])


async def test_client_secret_basic_when_discovery_lists_both(oidc_gate, oidc_op):
    oidc_op.auth_methods = ("client_secret_post", "client_secret_basic")
    assert (await (await oidc_gate()).login()).status == 302
    assert oidc_op.token_requests[0]["headers"]["Authorization"].startswith("Basic ")


async def test_client_secret_basic_when_discovery_lists_no_methods(oidc_gate, oidc_op):
    oidc_op.discovery_overrides["token_endpoint_auth_methods_supported"] = None
    assert "token_endpoint_auth_methods_supported" not in oidc_op.discovery_document()
    assert (await (await oidc_gate()).login()).status == 302
    assert oidc_op.token_requests[0]["headers"]["Authorization"].startswith("Basic ")


async def test_a_configured_method_wins_over_discovery(oidc_gate, oidc_op):
    oidc_op.discovery_overrides["token_endpoint_auth_methods_supported"] = ["client_secret_basic"]
    browser = await oidc_gate(token_endpoint_auth_method="client_secret_post")
    assert (await browser.login()).status == 302
    assert sent_by_post(oidc_op.token_requests[0])


async def test_refresh_uses_the_method_from_discovery(oidc_gate, oidc_op):
    oidc_op.auth_methods = ("client_secret_post",)
    browser = await oidc_gate(refresh={"enabled": True, "every": "10m"})
    assert (await browser.login()).status == 302
    st = browser.gate.app[STATE]
    sid = next(c.value for c in browser.gate.session.cookie_jar if c.key == st.cookies.session_name)
    session = await st.sessions.load(sid)
    await st.sessions.update(replace(session, refresh_at=0))
    assert (await upstream_headers(browser))["X-User"] == "alice@example.com"
    refresh = oidc_op.token_requests[-1]
    assert refresh["form"]["grant_type"] == "refresh_token"
    assert sent_by_post(refresh)


async def test_no_kid_with_exactly_one_fitting_key(oidc_gate, oidc_op):
    oidc_op.published = [oidc_op.rsa, oidc_op.ec]
    oidc_op.id_token_header = lambda h: {k: v for k, v in h.items() if k != "kid"}
    assert (await (await oidc_gate()).login()).status == 302


async def test_key_rotation_is_picked_up_by_refetching_the_jwks(oidc_gate, oidc_op):
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    assert oidc_op.jwks_fetches == 1
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa-2", "use": "sig"})
    oidc_op.published = [rotated, oidc_op.ec]
    oidc_op.use_key(rotated, "RS256")
    await browser.gate.get("/_authgate/logout", allow_redirects=False, headers=TYPED)
    assert (await browser.login()).status == 302
    assert oidc_op.jwks_fetches == 2


async def test_discovery_and_jwks_are_cached_between_logins(oidc_gate, oidc_op):
    browser = await oidc_gate()
    for _ in range(3):
        assert (await browser.login()).status == 302
    assert oidc_op.discovery_fetches == 1
    assert oidc_op.jwks_fetches == 1


async def test_several_tabs_can_sign_in_at_once(oidc_gate, oidc_op):
    browser = await oidc_gate()
    first = await browser.authorize(await browser.start(rd="/one"))
    second = await browser.authorize(await browser.start(rd="/two"))
    assert (await browser.callback(second)).headers["Location"] == "/two"
    assert (await browser.callback(first)).headers["Location"] == "/one"


async def test_return_path_is_kept_server_side_and_never_an_open_redirect(oidc_gate, oidc_op):
    browser = await oidc_gate()
    authorize = URL(await browser.start(rd="https://evil.example.com/phish"))
    assert "evil" not in str(authorize)
    resp = await browser.callback(await browser.authorize(str(authorize)))
    assert resp.headers["Location"] == "/"


async def test_logout_ends_the_session_and_continues_at_end_session(oidc_gate, oidc_op):
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    resp = await browser.gate.get("/_authgate/logout", allow_redirects=False, headers=TYPED)
    assert resp.status == 302
    target = URL(resp.headers["Location"])
    assert str(target.with_query(None)) == oidc_op.url("/logout")
    assert target.query["client_id"] == "authgate"
    assert target.query["post_logout_redirect_uri"] == "http://authgate.test/_authgate/logout"
    assert target.query["id_token_hint"].count(".") == 2
    after = await browser.gate.get("/app/page", headers={"Accept": "application/json"})
    assert after.status == 401


async def test_end_session_can_be_turned_off(oidc_gate, oidc_op):
    browser = await oidc_gate(end_session=False)
    assert (await browser.login()).status == 302
    resp = await browser.gate.get("/_authgate/logout", allow_redirects=False, headers=TYPED)
    assert resp.status == 200
    assert "signed out" in (await resp.text()).lower()


async def test_extra_authorization_parameters_never_replace_the_protected_ones(oidc_gate):
    browser = await oidc_gate(
        extra_auth_params={"prompt": "login", "code_challenge_method": "plain"}
    )
    authorize = URL(await browser.start())
    assert authorize.query["prompt"] == "login"
    assert authorize.query["code_challenge_method"] == "S256"
