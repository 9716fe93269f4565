"""ID token checks one by one: header judgement, signature with one chosen key, claims."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from authgate.errors import ProtocolError
from authgate.protocols.oidc_keys import fits, parse_jwks
from authgate.protocols.oidc_tokens import (
    Expected,
    check_at_hash,
    check_claims,
    check_header,
    hmac_key,
    read_header,
    verify_signature,
)
from tests.oidc_op import b64url, hmac_signed, signed

RSA = RSAKey.generate_key(2048, parameters={"kid": "r1"})
NOW = time.time()
ALLOWED = ["RS256", "PS256", "ES256"]


def claims(**changes) -> dict:
    base = {
        "iss": "https://idp.example.com",
        "aud": "client",
        "sub": "user-1",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "nonce": "n-0S6",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def expect(**changes) -> Expected:
    values = {
        "issuer": "https://idp.example.com",
        "client_id": "client",
        "now": NOW,
        "skew": 60.0,
        "nonce": "n-0S6",
    }
    values.update(changes)
    return Expected(**values)


def reason(func, *args) -> str:
    with pytest.raises(ProtocolError) as exc:
        func(*args)
    return exc.value.reason


def signature_refusal(func, *args) -> str:
    """The detail of a refusal that must be id_token_invalid for the signature (not SAML's code)."""
    with pytest.raises(ProtocolError) as exc:
        func(*args)
    assert exc.value.reason == "id_token_invalid"
    assert exc.value.detail.startswith("signature: ")
    return exc.value.detail


def test_valid_claims_pass():
    check_claims(claims(), expect())


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"iss": "https://evil.example.com"}, "issuer_mismatch"),
        ({"iss": ...}, "issuer_mismatch"),
        ({"aud": "other"}, "audience_mismatch"),
        ({"aud": ["other", "client"]}, "audience_mismatch"),
        ({"aud": ["other", "client"], "azp": "other"}, "audience_mismatch"),
        ({"aud": "client", "azp": "other"}, "audience_mismatch"),
        ({"aud": 42}, "audience_mismatch"),
        ({"exp": int(NOW) - 61}, "expired"),
        ({"exp": ...}, "id_token_invalid"),
        ({"exp": "tomorrow"}, "id_token_invalid"),
        ({"exp": True}, "id_token_invalid"),
        ({"iat": int(NOW) + 61}, "not_yet_valid"),
        ({"iat": ...}, "id_token_invalid"),
        ({"nbf": int(NOW) + 61}, "not_yet_valid"),
        ({"nonce": ...}, "nonce_mismatch"),
        ({"nonce": "other"}, "nonce_mismatch"),
        ({"nonce": 7}, "nonce_mismatch"),
        ({"sub": ...}, "id_token_invalid"),
        ({"sub": ""}, "id_token_invalid"),
        ({"sub": 12}, "id_token_invalid"),
    ],
)
def test_each_claim_check_has_its_reason(changes, expected):
    assert reason(check_claims, claims(**changes), expect()) == expected


def test_skew_is_allowed_on_every_time_claim():
    check_claims(claims(exp=int(NOW) - 59, iat=int(NOW) + 59, nbf=int(NOW) + 59), expect())


def test_several_audiences_with_the_right_azp_pass():
    check_claims(claims(aud=["client", "api"], azp="client"), expect())


def test_no_nonce_expected_on_refresh():
    check_claims(claims(nonce=...), expect(nonce=None))


def test_multi_tenant_issuer_is_the_template_filled_with_an_allowed_tid():
    template = expect(issuer="https://login.example.com/{tenantid}/v2.0", allowed_tenants=("t1",))
    ok = claims(iss="https://login.example.com/t1/v2.0", tid="t1")
    check_claims(ok, template)
    wrong_tid = claims(iss="https://login.example.com/t1/v2.0", tid="t2")
    assert reason(check_claims, wrong_tid, template) == "issuer_mismatch"
    other = claims(iss="https://login.example.com/t2/v2.0", tid="t2")
    assert reason(check_claims, other, template) == "issuer_mismatch"
    assert reason(check_claims, claims(iss="https://login.example.com/t1/v2.0"), template) == (
        "issuer_mismatch"
    )
    anyone = expect(issuer=template.issuer, allowed_tenants=("*",))
    check_claims(other, anyone)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b",
        "a.b.c.d.e",
        "%%%.e30.x",
        b64url(b"[1]") + ".e30.x",
        b64url(b'{"typ":"JWT"}') + ".e30.x",
        b64url(b'{"alg":"RS256","kid":5}') + ".e30.x",
        "x" * 70000 + ".e30.x",
    ],
)
def test_malformed_tokens_are_id_token_invalid(token):
    assert reason(read_header, token) == "id_token_invalid"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS256", "RS1", "ES256K"])
def test_algorithms_outside_the_allowlist_are_weak_alg(alg):
    assert reason(check_header, {"alg": alg}, ALLOWED) == "weak_alg"


def test_none_is_refused_even_if_someone_lists_it():
    assert reason(check_header, {"alg": "none"}, ["none", "RS256"]) == "weak_alg"


def test_any_crit_header_is_refused():
    assert reason(check_header, {"alg": "RS256", "crit": ["b64"], "b64": False}, ALLOWED) == (
        "id_token_invalid"
    )
    assert reason(check_header, {"alg": "RS256", "crit": []}, ALLOWED) == "id_token_invalid"


def test_signature_verifies_with_the_chosen_key_only():
    token = signed({"alg": "RS256", "kid": "r1"}, claims(), RSA)
    assert verify_signature(token, RSAKey.import_key(RSA.as_dict(private=False)), "RS256")["sub"]
    other = RSAKey.generate_key(2048)
    detail = signature_refusal(verify_signature, token, other, "RS256")
    assert detail == "signature: the ID token signature does not verify"


def test_a_key_of_the_wrong_type_is_id_token_invalid():
    token = signed({"alg": "RS256"}, claims(), RSA)
    ec = ECKey.generate_key("P-256")
    signature_refusal(verify_signature, token, ec, "RS256")


def test_hmac_with_the_client_secret():
    token = hmac_signed({"alg": "HS256"}, claims(), b"short secret")
    assert verify_signature(token, hmac_key("short secret"), "HS256")["sub"] == "user-1"
    signature_refusal(verify_signature, token, hmac_key("other"), "HS256")


def test_payload_that_is_not_an_object():
    token = hmac_signed({"alg": "HS256"}, [1, 2], b"k")
    assert reason(verify_signature, token, hmac_key("k"), "HS256") == "id_token_invalid"


def test_at_hash_matches_the_access_token():
    digest = hashlib.sha256(b"access-token-value").digest()
    good = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    check_at_hash({"at_hash": good}, "RS256", "access-token-value")
    check_at_hash({}, "RS256", "access-token-value")
    assert reason(check_at_hash, {"at_hash": good}, "RS256", "another") == "id_token_invalid"


def test_fits_matches_kty_curve_use_alg_and_key_ops():
    rsa = RSAKey.import_key(RSA.as_dict(private=False))
    assert fits(rsa, "RS256") and fits(rsa, "PS256")
    assert not fits(rsa, "ES256")
    p256 = ECKey.generate_key("P-256")
    assert fits(p256, "ES256") and not fits(p256, "ES384")
    assert fits(OKPKey.generate_key("Ed25519"), "EdDSA")
    assert not fits(OctKey.generate_key(256), "HS256")
    enc = RSAKey.import_key({**RSA.as_dict(private=False), "use": "enc"})
    assert not fits(enc, "RS256")
    pinned = RSAKey.import_key({**RSA.as_dict(private=False), "alg": "PS256"})
    assert fits(pinned, "PS256") and not fits(pinned, "RS256")
    wrap_only = RSAKey.import_key({**RSA.as_dict(private=False), "key_ops": ["wrapKey"]})
    assert not fits(wrap_only, "RS256")


def test_parse_jwks_keeps_public_keys_and_skips_unusable_entries():
    public = RSA.as_dict(private=False)
    doc = {
        "keys": [
            public,
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "broken"},
            "junk",
            {"kty": "XYZ"},
            RSA.as_dict(private=True),
        ]
    }
    keys = parse_jwks(doc)
    assert [k.kid for k in keys] == ["r1"]
    assert all(not k.is_private for k in keys)
