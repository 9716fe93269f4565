"""The signed identity assertion, verified the way an upstream would: joserfc and the JWKS.

Tokens are checked with keys fetched from `/_authgate/jwks.json` (or read from
the mounted PEM directly), never with authgate's own objects, so a signer
that drifts from what it publishes fails here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import ECKey, KeySet, OctKey

from authgate import assertion
from authgate.app import create_app
from authgate.session.kv import KeyValueStore
from authgate.session.memory import MemoryStore
from authgate.session.sessions import Session
from authgate.settings import ConfigError, Settings
from tests.conftest import redis_kv, sign_in

ISSUER = "https://app.example.com"
NOW = 1_800_000_000.0


def make_session(**fields: Any) -> Session:
    base: dict[str, Any] = {
        "user_id": "u-1", "connection": "corp", "subject": "sub-1",
        "username": "alice@example.com", "email": "alice@example.com", "name": "Alice",
        "groups": ("Engineering",), "roles": ("viewer",), "created_at": NOW,
        "last_seen": NOW, "expires_at": NOW + 3600, "id": "sid-1",
    }  # fmt: skip
    base.update(fields)
    return Session(**base)


def verify(token: str, jwks: dict[str, Any]) -> jwt.Token:
    return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])


def claims_of(signer: assertion.AssertionSigner, token: str) -> dict[str, Any]:
    return verify(token, signer.jwks()).claims


@pytest.fixture
def ring() -> assertion.KeyRing:
    return assertion.new_ring(NOW)


@pytest.fixture
def signer(ring: assertion.KeyRing) -> assertion.AssertionSigner:
    return assertion.AssertionSigner(ring, ISSUER, None, 60)


# -- claims and signature ----------------------------------------------------------------------


def test_token_verifies_with_the_published_jwks_and_carries_the_identity(
    signer: assertion.AssertionSigner,
):
    token = verify(signer.sign(make_session(), NOW), signer.jwks())
    assert token.header["alg"] == "ES256"
    assert token.header["kid"] == signer.ring.current.kid
    registry = jwt.JWTClaimsRegistry(
        now=int(NOW), iss={"essential": True, "value": ISSUER}, sub={"essential": True}
    )
    registry.validate(token.claims)
    assert token.claims["sub"] == "u-1"
    assert token.claims["email"] == "alice@example.com"
    assert token.claims["groups"] == ["Engineering"]
    assert token.claims["roles"] == ["viewer"]
    assert token.claims["connection"] == "corp"
    assert token.claims["iat"] == int(NOW)
    assert token.claims["exp"] == int(NOW) + 60


def test_audience_is_set_when_configured(ring: assertion.KeyRing):
    signer = assertion.AssertionSigner(ring, ISSUER, "legacy-app", 60)
    token = verify(signer.sign(make_session(), NOW), signer.jwks())
    jwt.JWTClaimsRegistry(now=int(NOW), aud={"essential": True, "value": "legacy-app"}).validate(
        token.claims
    )


def test_missing_email_and_name_are_omitted_not_null(signer: assertion.AssertionSigner):
    token = verify(signer.sign(make_session(email=None, name=None), NOW), signer.jwks())
    assert "email" not in token.claims and "name" not in token.claims


def test_sub_second_lifetime_never_yields_an_already_expired_token(ring: assertion.KeyRing):
    signer = assertion.AssertionSigner(ring, ISSUER, None, 0.4)
    claims = claims_of(signer, signer.sign(make_session(), NOW + 0.9))
    assert claims["exp"] - claims["iat"] == 1


def test_token_signed_by_another_key_with_our_kid_is_rejected(signer: assertion.AssertionSigner):
    forger = ECKey.generate_key("P-256", private=True)
    header = {"alg": "ES256", "kid": signer.ring.current.kid}
    forged = jwt.encode(header, {"iss": ISSUER, "sub": "admin"}, forger, algorithms=["ES256"])
    with pytest.raises(BadSignatureError):
        verify(forged, signer.jwks())


def test_token_with_an_unknown_kid_is_rejected(signer: assertion.AssertionSigner):
    forger = ECKey.generate_key("P-256", private=True, auto_kid=True)
    forged = jwt.encode({"alg": "ES256", "kid": forger.kid}, {"sub": "admin"}, forger)
    with pytest.raises(InvalidKeyIdError):
        verify(forged, signer.jwks())


def test_hmac_token_keyed_with_the_public_key_is_rejected(signer: assertion.AssertionSigner):
    """Algorithm confusion: HS256 with the published key as the secret must not verify."""
    public = json.dumps(signer.jwks()["keys"][0]).encode()
    header = {"alg": "HS256", "kid": signer.ring.current.kid}
    forged = jwt.encode(header, {"sub": "admin"}, OctKey.import_key(public), algorithms=["HS256"])
    with pytest.raises(JoseError):
        verify(forged, signer.jwks())


def test_jwks_publishes_only_public_keys(signer: assertion.AssertionSigner):
    for key in signer.jwks()["keys"]:
        assert "d" not in key
        assert key["kty"] == "EC" and key["crv"] == "P-256"
        assert key["use"] == "sig" and key["alg"] == "ES256"


# -- the per-session cache ---------------------------------------------------------------------


def test_cached_token_is_reused_only_while_more_than_half_its_lifetime_remains(
    signer: assertion.AssertionSigner,
):
    session = make_session()
    first = signer.sign(session, NOW)
    assert signer.sign(session, NOW + 29.9) == first
    assert signer.sign(session, NOW + 30) != first


def test_no_token_handed_out_ever_has_less_than_half_its_lifetime_left(
    signer: assertion.AssertionSigner,
):
    session = make_session()
    for step in range(0, 800):
        now = NOW + step * 0.37
        remaining = claims_of(signer, signer.sign(session, now))["exp"] - now
        assert remaining > 30, (step, remaining)


@pytest.mark.parametrize(
    "change",
    [
        {"groups": ("Engineering", "Admins")},
        {"roles": ("admin",)},
        {"roles": ()},
        {"email": "alice@new.example.com"},
        {"name": "Alice Renamed"},
        {"username": "alice2"},
    ],
)
def test_changed_identity_facts_sign_a_new_token_at_once(
    signer: assertion.AssertionSigner, change: dict[str, Any]
):
    session = make_session()
    first = signer.sign(session, NOW)
    changed = replace(session, **change)
    second = signer.sign(changed, NOW + 1)
    assert second != first
    claims = claims_of(signer, second)
    for field, value in change.items():
        claim = {"username": "preferred_username"}.get(field, field)
        expected = list(value) if isinstance(value, tuple) else value
        assert claims[claim] == expected


def test_sessions_never_share_a_cached_token(signer: assertion.AssertionSigner):
    alice = make_session()
    bob = make_session(id="sid-2", user_id="u-2", username="bob@example.com")
    assert claims_of(signer, signer.sign(alice, NOW))["sub"] == "u-1"
    assert claims_of(signer, signer.sign(bob, NOW))["sub"] == "u-2"
    assert claims_of(signer, signer.sign(alice, NOW + 1))["sub"] == "u-1"


def test_new_signing_key_invalidates_cached_tokens(
    signer: assertion.AssertionSigner, ring: assertion.KeyRing
):
    session = make_session()
    first = signer.sign(session, NOW)
    assert ring.next is not None
    rotated = assertion.KeyRing(ring.next, ring.current, NOW)
    signer.replace_ring(rotated)
    second = signer.sign(session, NOW + 1)
    assert second != first
    assert verify(second, rotated.jwks()).header["kid"] == ring.next.kid


def test_cache_stays_bounded(signer: assertion.AssertionSigner):
    for i in range(assertion.CACHE_SIZE + 50):
        signer.sign(make_session(id=f"sid-{i}"), NOW)
    assert len(signer._cache) == assertion.CACHE_SIZE


# -- the key ring in the shared store ----------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    if request.param == "memory":
        store: KeyValueStore = MemoryStore()
    else:
        store = redis_kv(request.getfixturevalue("redis_url"))
    yield store
    await store.close()


async def test_racing_replicas_agree_on_one_key(kv: KeyValueStore):
    rings = await asyncio.gather(*(assertion.load_or_create(kv, 3600) for _ in range(8)))
    assert len({r.current.kid for r in rings}) == 1
    assert len({r.next.kid for r in rings if r.next}) == 1


async def test_ring_survives_the_store_round_trip(kv: KeyValueStore):
    ring = await assertion.load_or_create(kv, 3600)
    again = await assertion.load_or_create(kv, 3600)
    assert again.jwks() == ring.jwks()
    token = assertion.AssertionSigner(again, ISSUER, None, 60).sign(make_session(), NOW)
    assert verify(token, ring.jwks()).claims["sub"] == "u-1"


async def test_rotation_uses_the_pre_published_key_and_keeps_the_previous(kv: KeyValueStore):
    ring = await assertion.load_or_create(kv, 3600)
    jwks_before = ring.jwks()
    signer = assertion.AssertionSigner(ring, ISSUER, None, 60)
    old_token = signer.sign(make_session(), NOW)

    rotated = await assertion.rotate(kv, ring)
    signer.replace_ring(rotated)
    new_token = signer.sign(make_session(), NOW + 1)

    assert rotated.current.kid != ring.current.kid
    assert verify(new_token, jwks_before).header["kid"] == rotated.current.kid
    assert verify(old_token, rotated.jwks()).header["kid"] == ring.current.kid
    assert verify(new_token, rotated.jwks()).claims["sub"] == "u-1"
    stored = await assertion.load_or_create(kv, 3600)
    assert stored.jwks() == rotated.jwks()


async def test_a_second_rotation_retires_the_oldest_key(kv: KeyValueStore):
    ring = await assertion.load_or_create(kv, 3600)
    old_token = assertion.AssertionSigner(ring, ISSUER, None, 60).sign(make_session(), NOW)
    once = await assertion.rotate(kv, ring)
    await kv.delete("assertion-keys-lock")
    twice = await assertion.rotate(kv, once)
    with pytest.raises(InvalidKeyIdError):
        verify(old_token, twice.jwks())


async def test_an_old_ring_rotates_once_across_replicas(kv: KeyValueStore):
    stale = assertion.new_ring(time.time() - 100_000)
    await kv.set("assertion-keys", stale.to_json())
    rings = await asyncio.gather(*(assertion.load_or_create(kv, 3600) for _ in range(4)))
    stored = await assertion.load_or_create(kv, 3600)
    assert stale.next is not None
    assert stored.current.kid == stale.next.kid
    assert stored.previous is not None and stored.previous.kid == stale.current.kid
    assert {r.current.kid for r in rings} <= {stale.current.kid, stored.current.kid}


# -- a mounted key file ------------------------------------------------------------------------


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_key_file_and_previous_are_loaded(tmp_path: Path):
    current, previous = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    path = tmp_path / "assertion.pem"
    path.write_bytes(_pem(current))
    (tmp_path / "assertion.pem.previous").write_bytes(_pem(previous))
    ring = assertion.load_key_file(path)
    token = assertion.AssertionSigner(ring, ISSUER, None, 60).sign(make_session(), NOW)
    independent = ECKey.import_key(_public_pem(current))
    assert jwt.decode(token, independent, algorithms=["ES256"]).claims["sub"] == "u-1"
    kids = [k["kid"] for k in ring.jwks()["keys"]]
    assert kids == [independent.thumbprint(), ECKey.import_key(_public_pem(previous)).thumbprint()]


def test_key_file_may_be_a_jwk(tmp_path: Path):
    key = ECKey.generate_key("P-256", private=True)
    path = tmp_path / "assertion.jwk"
    path.write_text(json.dumps(key.as_dict(private=True)))
    assert assertion.load_key_file(path).current.thumbprint() == key.thumbprint()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda: _pem(ec.generate_private_key(ec.SECP384R1())), "P-256"),
        (lambda: _public_pem(ec.generate_private_key(ec.SECP256R1())), "public"),
        (lambda: _pem(rsa.generate_private_key(65537, 2048)), "P-256 EC private key"),
        (lambda: b"not a key at all", "cannot load"),
    ],
)
def test_unusable_key_file_is_a_config_error(
    tmp_path: Path, content: Callable[[], bytes], problem: str
):
    path = tmp_path / "assertion.pem"
    path.write_bytes(content())
    with pytest.raises(ConfigError) as refused:
        assertion.load_key_file(path)
    assert str(path) in str(refused.value) and problem in str(refused.value)


def test_missing_key_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot load"):
        assertion.load_key_file(tmp_path / "absent.pem")


# -- through the application -------------------------------------------------------------------


async def _jwks(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/_authgate/jwks.json")
    assert resp.status == 200
    return await resp.json()


async def _upstream_assertion(client: TestClient) -> str:
    resp = await client.get("/anything")
    assert resp.status == 200
    headers = (await resp.json())["headers"]
    values = [v for k, v in headers if k.lower() == "x-authgate-assertion"]
    assert len(values) == 1
    return values[0]


async def test_assertion_received_upstream_verifies_with_the_jwks_endpoint(authgate: TestClient):
    session = await sign_in(authgate)
    token = verify(await _upstream_assertion(authgate), await _jwks(authgate))
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        sub={"essential": True, "value": session.user_id},
        email={"essential": True, "value": "alice@example.com"},
    ).validate(token.claims)
    assert token.header["alg"] == "ES256"
    assert token.claims["groups"] == ["Engineering"]
    assert token.claims["roles"] == ["viewer"]
    assert token.claims["exp"] - token.claims["iat"] == 60


async def test_two_apps_on_one_store_share_the_signing_key(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings], kv: KeyValueStore
):
    first = await aiohttp_client(create_app(settings_factory(), kv))
    second = await aiohttp_client(create_app(settings_factory(), kv))
    assert await _jwks(first) == await _jwks(second)
    await sign_in(first)
    token = await _upstream_assertion(first)
    assert verify(token, await _jwks(second)).claims["email"] == "alice@example.com"


async def test_app_with_a_mounted_key_signs_with_that_key(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings], tmp_path: Path
):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "assertion.pem"
    path.write_bytes(_pem(key))
    settings = settings_factory(headers={"assertion": {"key_file": str(path)}})
    client = await aiohttp_client(create_app(settings, MemoryStore()))
    await sign_in(client)
    token = await _upstream_assertion(client)
    public = ECKey.import_key(_public_pem(key))
    assert jwt.decode(token, public, algorithms=["ES256"]).header["kid"] == public.thumbprint()
    assert [k["kid"] for k in (await _jwks(client))["keys"]] == [public.thumbprint()]


async def test_app_refuses_to_start_with_a_wrong_curve_key(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings], tmp_path: Path
):
    path = tmp_path / "assertion.pem"
    path.write_bytes(_pem(ec.generate_private_key(ec.SECP384R1())))
    settings = settings_factory(headers={"assertion": {"key_file": str(path)}})
    with pytest.raises(ConfigError, match="P-256"):
        await aiohttp_client(create_app(settings, MemoryStore()))


async def test_disabled_assertion_header_sends_nothing(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings]
):
    settings = settings_factory(headers={"assertion": {"header": None}})
    client = await aiohttp_client(create_app(settings, MemoryStore()))
    await sign_in(client)
    resp = await client.get("/anything", headers={"X-Authgate-Assertion": "forged"})
    headers = (await resp.json())["headers"]
    assert not [k for k, _ in headers if k.lower() == "x-authgate-assertion"]
    assert await _jwks(client) == {"keys": []}
