"""The development IdP's OpenID Provider refuses what a strict real provider refuses.

authgate's demo is only an honest test of the relying party if the provider
on the other side enforces PKCE, exact redirect URIs, client authentication
and single-use codes. Each hostile request is built here and the exact OAuth
error asserted; a good request yields an ID token that verifies with the JWKS.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from authgate.devidp import store
from authgate.devidp.oidc import (
    CODE_TTL,
    ClientError,
    OAuthError,
    OidcClient,
    OidcProvider,
    s256,
)
from authgate.devidp.users import DevUser, find
from authgate.protocols.oidc_tokens import check_at_hash

ISSUER = "http://127.0.0.1:4181/oidc"
REDIRECT = "http://127.0.0.1:4180/_authgate/oidc/dev-oidc/callback"
LOGOUT = "http://127.0.0.1:4180/_authgate/logout"


def _user(email: str) -> DevUser:
    user = find(email)
    assert user is not None
    return user


ALICE, CAROL = _user("alice@example.com"), _user("carol@partner.example")


@pytest.fixture(scope="module")
def provider() -> OidcProvider:
    return OidcProvider(
        ISSUER,
        (
            OidcClient("es", "es-secret", (REDIRECT,), (LOGOUT,)),
            OidcClient("rs", "rs-secret", (REDIRECT,), (LOGOUT,), id_token_alg="RS256"),
        ),
    )


def params(**changes: str | None) -> dict[str, str]:
    base: dict[str, str | None] = {
        "client_id": "es",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email profile",
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": s256("v" * 64),
        "code_challenge_method": "S256",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def code_for(provider: OidcProvider, user: Any = ALICE, **changes: str | None) -> str:
    location = provider.issue_code(provider.authorization_request(params(**changes)), user, 1)
    query = parse_qs(urlsplit(location).query)
    assert query["iss"] == [ISSUER]
    return query["code"][0]


def exchange(
    provider: OidcProvider, code: str, client: str = "es", secret: str = "es-secret", **form: str
) -> dict[str, Any]:
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": "v" * 64,
        **form,
    }
    return provider.token(body, basic(client, secret))


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"client_id": "nobody"}, "invalid_client"),
        ({"client_id": None}, "invalid_client"),
        ({"redirect_uri": REDIRECT + "/"}, "invalid_request"),
        ({"redirect_uri": REDIRECT.replace("4180", "4999")}, "invalid_request"),
        ({"redirect_uri": "https://evil.example/callback"}, "invalid_request"),
        ({"redirect_uri": None}, "invalid_request"),
    ],
)
def test_unknown_clients_and_redirect_uris_are_never_redirected_to(
    provider: OidcProvider, changes: dict[str, str | None], error: str
):
    with pytest.raises(ClientError) as refused:
        provider.authorization_request(params(**changes))
    assert refused.value.error == error


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"response_type": "token"}, "unsupported_response_type", "response_type=code"),
        ({"response_type": "code id_token"}, "unsupported_response_type", "response_type=code"),
        ({"scope": "email profile"}, "invalid_scope", "openid"),
        ({"code_challenge": None}, "invalid_request", "PKCE is required"),
        ({"code_challenge_method": None}, "invalid_request", "PKCE is required"),
        ({"code_challenge_method": "plain"}, "invalid_request", "PKCE is required"),
        ({"code_challenge": "short"}, "invalid_request", "not a base64url SHA-256"),
        ({"code_challenge": "a" * 42 + "!"}, "invalid_request", "not a base64url SHA-256"),
    ],
)
def test_bad_authorization_requests_get_an_oauth_error(
    provider: OidcProvider, changes: dict[str, str | None], error: str, words: str
):
    with pytest.raises(OAuthError) as refused:
        provider.authorization_request(params(**changes))
    assert not isinstance(refused.value, ClientError)
    assert refused.value.error == error
    assert words in refused.value.description


def test_the_error_redirect_carries_state_and_issuer(provider: OidcProvider):
    location = provider.error_redirect(REDIRECT, "st-9", "access_denied", "cancelled")
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(REDIRECT + "?")
    assert query == {
        "error": ["access_denied"],
        "error_description": ["cancelled"],
        "iss": [ISSUER],
        "state": ["st-9"],
    }


@pytest.mark.parametrize("client", ["es", "rs"])
def test_a_good_exchange_gives_an_id_token_that_verifies_with_the_jwks(
    provider: OidcProvider, client: str
):
    tokens = exchange(provider, code_for(provider, client_id=client), client, f"{client}-secret")
    assert tokens["token_type"] == "Bearer"
    keys = KeySet.import_key_set(provider.jwks())
    token = jwt.decode(tokens["id_token"], keys, algorithms=["ES256", "RS256"])
    assert token.header["alg"] == {"es": "ES256", "rs": "RS256"}[client]
    claims = token.claims
    assert (claims["iss"], claims["aud"], claims["sub"]) == (ISSUER, client, ALICE.id)
    assert (claims["nonce"], claims["email"], claims["email_verified"]) == (
        "n-1",
        ALICE.email,
        True,
    )
    assert claims["groups"] == ["admins", "engineering"]
    assert "at_hash" in claims
    check_at_hash(claims, token.header["alg"], tokens["access_token"])
    assert claims["exp"] > claims["iat"]


def test_the_unverified_user_is_reported_as_unverified(provider: OidcProvider):
    tokens = exchange(provider, code_for(provider, CAROL))
    claims = jwt.decode(tokens["id_token"], KeySet.import_key_set(provider.jwks())).claims
    assert (claims["email"], claims["email_verified"]) == (CAROL.email, False)


@pytest.mark.parametrize(
    ("authorization", "form", "error", "status"),
    [
        (basic("es", "wrong"), {}, "invalid_client", 401),
        (basic("nobody", "es-secret"), {}, "invalid_client", 401),
        (basic("rs", "rs-secret"), {}, "invalid_grant", 400),
        ("Basic !!!", {}, "invalid_client", 401),
        ("Basic " + base64.b64encode(b"no-colon").decode(), {}, "invalid_client", 401),
        ("Bearer es-secret", {}, "invalid_client", 401),
        (basic("es", "es-secret"), {"client_secret": "es-secret"}, "invalid_request", 400),
        (None, {"client_id": "es", "client_secret": "wrong"}, "invalid_client", 401),
    ],
)
def test_client_authentication_is_enforced(
    provider: OidcProvider,
    authorization: str | None,
    form: dict[str, str],
    error: str,
    status: int,
):
    body = {
        "grant_type": "authorization_code",
        "code": code_for(provider),
        "redirect_uri": REDIRECT,
        "code_verifier": "v" * 64,
        **form,
    }
    with pytest.raises(OAuthError) as refused:
        provider.token(body, authorization)
    assert (refused.value.error, refused.value.status) == (error, status)


def test_client_secret_post_is_accepted(provider: OidcProvider):
    body = {
        "grant_type": "authorization_code",
        "code": code_for(provider),
        "redirect_uri": REDIRECT,
        "code_verifier": "v" * 64,
        "client_id": "es",
        "client_secret": "es-secret",
    }
    assert provider.token(body, None)["id_token"]


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"code_verifier": "w" * 64}, "does not match the code_challenge"),
        ({"code_verifier": "v" * 42}, "missing or malformed"),
        ({"code_verifier": "v" * 63 + "+"}, "missing or malformed"),
        ({"code_verifier": ""}, "missing or malformed"),
        ({"redirect_uri": REDIRECT + "?x=1"}, "redirect_uri differs"),
    ],
)
def test_the_code_is_bound_to_its_verifier_and_redirect_uri(
    provider: OidcProvider, form: dict[str, str], words: str
):
    with pytest.raises(OAuthError) as refused:
        exchange(provider, code_for(provider), **form)
    assert refused.value.error == "invalid_grant"
    assert words in refused.value.description


def test_a_made_up_code_is_refused(provider: OidcProvider):
    with pytest.raises(OAuthError) as refused:
        exchange(provider, secrets.token_urlsafe(32))
    assert refused.value.error == "invalid_grant"
    assert "unknown, expired or already used" in refused.value.description


def test_an_unsupported_grant_type_is_refused(provider: OidcProvider):
    with pytest.raises(OAuthError) as refused:
        exchange(provider, code_for(provider), grant_type="refresh_token")
    assert refused.value.error == "unsupported_grant_type"


def test_a_code_works_once(provider: OidcProvider):
    code = code_for(provider)
    exchange(provider, code)
    with pytest.raises(OAuthError) as refused:
        exchange(provider, code)
    assert refused.value.error == "invalid_grant"


def test_a_failed_exchange_still_burns_the_code(provider: OidcProvider):
    code = code_for(provider)
    with pytest.raises(OAuthError):
        exchange(provider, code, code_verifier="w" * 64)
    with pytest.raises(OAuthError) as refused:
        exchange(provider, code)
    assert "already used" in refused.value.description


def test_an_expired_code_is_refused(provider: OidcProvider, monkeypatch: pytest.MonkeyPatch):
    code = code_for(provider)
    later = store.time.time() + CODE_TTL + 1
    monkeypatch.setattr(store.time, "time", lambda: later)
    with pytest.raises(OAuthError) as refused:
        exchange(provider, code)
    assert refused.value.error == "invalid_grant"


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer made-up", "Basic abc", "bearer  "]
)
def test_userinfo_needs_a_valid_access_token(provider: OidcProvider, authorization: str | None):
    with pytest.raises(OAuthError) as refused:
        provider.userinfo(authorization)
    assert (refused.value.error, refused.value.status) == ("invalid_token", 401)


def test_userinfo_answers_for_the_token_holder(provider: OidcProvider):
    tokens = exchange(provider, code_for(provider))
    info = provider.userinfo("Bearer " + tokens["access_token"])
    assert info["sub"] == ALICE.id
    assert info["email"] == ALICE.email


def test_end_session_returns_only_to_registered_uris(provider: OidcProvider):
    tokens = exchange(provider, code_for(provider))
    hint = tokens["id_token"]
    assert provider.end_session({"id_token_hint": hint, "post_logout_redirect_uri": LOGOUT}) == (
        LOGOUT
    )
    assert (
        provider.end_session({"client_id": "es", "post_logout_redirect_uri": LOGOUT, "state": "s"})
        == LOGOUT + "?state=s"
    )
    assert provider.end_session({}) is None


@pytest.mark.parametrize(
    ("query", "words"),
    [
        (
            {"client_id": "es", "post_logout_redirect_uri": "https://evil.example/"},
            "not registered",
        ),
        ({"post_logout_redirect_uri": LOGOUT}, "not registered"),
        ({"client_id": "nobody", "post_logout_redirect_uri": LOGOUT}, "not registered"),
        ({"id_token_hint": "not-a-jwt", "post_logout_redirect_uri": LOGOUT}, "does not verify"),
    ],
)
def test_end_session_refuses_hostile_requests(
    provider: OidcProvider, query: dict[str, str], words: str
):
    with pytest.raises(ClientError) as refused:
        provider.end_session(query)
    assert words in refused.value.description


def test_end_session_refuses_a_hint_signed_by_another_key(provider: OidcProvider):
    forger = ECKey.generate_key("P-256")
    forger.ensure_kid()
    claims = {"iss": ISSUER, "aud": "es", "sub": ALICE.id}
    forged = jwt.encode({"alg": "ES256", "kid": forger.kid}, claims, forger)
    with pytest.raises(ClientError) as refused:
        provider.end_session({"id_token_hint": forged, "post_logout_redirect_uri": LOGOUT})
    assert "does not verify" in refused.value.description


def test_end_session_refuses_a_client_id_that_contradicts_the_hint(provider: OidcProvider):
    hint = exchange(provider, code_for(provider))["id_token"]
    query = {"id_token_hint": hint, "client_id": "rs", "post_logout_redirect_uri": LOGOUT}
    with pytest.raises(ClientError) as refused:
        provider.end_session(query)
    assert "differs from the id_token_hint" in refused.value.description


def test_discovery_advertises_what_is_enforced(provider: OidcProvider):
    doc = provider.discovery()
    assert doc["issuer"] == ISSUER
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert {k["kty"] for k in provider.jwks()["keys"]} == {"EC", "RSA"}
    assert all("d" not in k for k in provider.jwks()["keys"])


def test_codes_and_tokens_are_unguessable(provider: OidcProvider):
    codes = {code_for(provider) for _ in range(3)}
    assert len(codes) == 3
    assert all(len(c) >= 43 for c in codes)
    assert secrets.compare_digest(s256("v" * 64), params()["code_challenge"])
