"""OpenID Connect Back-Channel Logout: the provider ends a sign-in, and only that one.

Each logout token is built here and signed with joserfc (the test
provider's key, or a forged one). Every rule of the specification has a
token that breaks it, refused with its reason code while the session stays.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from authgate.protocols.oidc_logout import BACKCHANNEL_EVENT
from tests.oidc_op import Browser, TestOP, compact, signed

ENDPOINT = "/_authgate/oidc/corp/backchannel-logout"
SID = "op-session-1"


def logout_token(op: TestOP, header: dict[str, Any] | None = None, **claims: Any) -> str:
    body: dict[str, Any] = {
        "iss": op.issuer,
        "aud": op.client_id,
        "iat": int(time.time()),
        "jti": secrets.token_hex(8),
        "events": {BACKCHANNEL_EVENT: {}},
        "sub": "user-1",
        "sid": SID,
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    head = {"alg": "RS256", "kid": op.signing_key.kid, "typ": "logout+jwt", **(header or {})}
    return signed(head, body, op.signing_key)


async def signed_in(oidc_gate, op: TestOP, sid: str | None = SID) -> Browser:
    op.id_token_claims = lambda c: {**c, "sid": sid} if sid else c
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    assert await alive(browser)
    return browser


async def alive(browser: Browser) -> bool:
    resp = await browser.gate.get("/app/page", headers={"Accept": "application/json"})
    return resp.status == 200


async def post(browser: Browser, token: str) -> Any:
    return await browser.gate.post(ENDPOINT, data={"logout_token": token})


@pytest.mark.parametrize(
    "names", [{"sid": SID, "sub": "user-1"}, {"sid": SID, "sub": None}, {"sid": None}]
)
async def test_a_valid_logout_token_ends_the_session(oidc_gate, oidc_op, names):
    browser = await signed_in(oidc_gate, oidc_op)
    resp = await post(browser, logout_token(oidc_op, **names))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    assert not await alive(browser)


async def test_another_provider_session_or_subject_ends_nothing(oidc_gate, oidc_op):
    browser = await signed_in(oidc_gate, oidc_op)
    for names in ({"sid": "another-session"}, {"sid": SID, "sub": "someone-else"}):
        assert (await post(browser, logout_token(oidc_op, **names))).status == 200
        assert await alive(browser)


def _other_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


FORGED: dict[str, tuple[str, Any]] = {
    "signed with another key": ("id_token_invalid", {"key": "other"}),
    "alg none": ("weak_alg", {"alg": "none"}),
    "wrong issuer": ("issuer_mismatch", {"iss": "https://evil.example"}),
    "wrong audience": ("audience_mismatch", {"aud": "someone-else"}),
    "issued in the future": ("not_yet_valid", {"iat": int(time.time()) + 3600}),
    "issued long ago": ("expired", {"iat": int(time.time()) - 3600}),
    "expired": ("expired", {"exp": int(time.time()) - 3600}),
    "no events": ("id_token_invalid", {"events": None}),
    "another event": ("id_token_invalid", {"events": {"http://example.com/other": {}}}),
    "a nonce": ("id_token_invalid", {"nonce": "n-1"}),
    "no jti": ("id_token_invalid", {"jti": None}),
    "neither sid nor sub": ("id_token_invalid", {"sid": None, "sub": None}),
    "typ of an access token": ("id_token_invalid", {"typ": "at+jwt"}),
}


@pytest.mark.parametrize("name", sorted(FORGED))
async def test_a_forged_logout_token_is_refused_and_the_session_stays(oidc_gate, oidc_op, name):
    reason, change = FORGED[name]
    browser = await signed_in(oidc_gate, oidc_op)
    if change.get("key") == "other":
        token = signed(
            {"alg": "RS256", "kid": "rsa-1", "typ": "logout+jwt"},
            {"iss": oidc_op.issuer, "aud": oidc_op.client_id, "iat": int(time.time()),
             "jti": "j1", "events": {BACKCHANNEL_EVENT: {}}, "sid": SID},
            _other_key(),
        )  # fmt: skip
    elif change.get("alg") == "none":
        token = compact({"alg": "none"}, {"iss": oidc_op.issuer, "sid": SID})
    elif "typ" in change:
        token = logout_token(oidc_op, header={"typ": change["typ"]})
    else:
        token = logout_token(oidc_op, **change)
    resp = await post(browser, token)
    body = await resp.json()
    assert (resp.status, body["error"]) == (400, reason)
    assert set(body) == {"error", "correlation_id"}
    assert await alive(browser)


async def test_a_logout_token_is_used_once_across_replicas(oidc_gate, oidc_op):
    first = await signed_in(oidc_gate, oidc_op)
    token = logout_token(oidc_op)
    other = await oidc_gate()
    assert (await post(other, token)).status == 200
    assert not await alive(first)
    resp = await post(first, token)
    assert (resp.status, (await resp.json())["error"]) == (400, "replayed")


async def test_an_id_token_is_not_a_logout_token(oidc_gate, oidc_op):
    browser = await signed_in(oidc_gate, oidc_op)
    resp = await post(browser, oidc_op.id_token(nonce="n-1", extra={"sid": SID}))
    assert (resp.status, (await resp.json())["error"]) == (400, "id_token_invalid")
    assert await alive(browser)


async def test_no_token_or_a_get_is_refused(oidc_gate, oidc_op):
    browser = await signed_in(oidc_gate, oidc_op)
    resp = await browser.gate.post(ENDPOINT, data={})
    assert (resp.status, (await resp.json())["error"]) == (400, "id_token_invalid")
    resp = await browser.gate.get(ENDPOINT)
    assert resp.status == 404


FRONT = "/_authgate/oidc/corp/frontchannel-logout"


async def test_front_channel_logout_ends_this_browsers_session_when_iss_and_sid_match(
    oidc_gate, oidc_op
):
    browser = await signed_in(oidc_gate, oidc_op)
    resp = await browser.gate.get(FRONT, params={"iss": oidc_op.issuer, "sid": SID})
    assert resp.status == 200
    policy = resp.headers["Content-Security-Policy"]
    assert policy == f"default-src 'none'; frame-ancestors {oidc_op.origin}"
    assert not await alive(browser)


@pytest.mark.parametrize(
    "params",
    [
        {"iss": "https://evil.example", "sid": SID},
        {"sid": SID},
        {"iss": "ISSUER", "sid": "another-session"},
        {"iss": "ISSUER"},
    ],
)
async def test_front_channel_logout_with_another_iss_or_sid_ends_nothing(
    oidc_gate, oidc_op, params
):
    browser = await signed_in(oidc_gate, oidc_op)
    query = {k: (oidc_op.issuer if v == "ISSUER" else v) for k, v in params.items()}
    resp = await browser.gate.get(FRONT, params=query)
    assert resp.status == 200
    assert resp.headers["Content-Security-Policy"].endswith("frame-ancestors 'none'")
    assert await alive(browser)
