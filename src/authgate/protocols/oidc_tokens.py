"""ID token validation (OpenID Connect Core §3.1.3.7), each failure with its SPEC §8 reason.

Signature checking and claim checking are separate steps, as in joserfc: the
header is read and judged first (algorithm allowlist, `crit`), the key is
chosen by authgate (see `oidc_keys`), joserfc verifies the signature with that
one key and that one algorithm, and only then are the claims examined.

A signature that does not verify is `id_token_invalid` with a detail starting
`signature:` (the code OIDC guides list); `signature_invalid` is SAML's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import Key, OctKey
from joserfc.jws import JWSRegistry

from authgate.errors import ProtocolError

MAX_TOKEN_BYTES = 64 * 1024
UNDERSTOOD_CRIT: frozenset[str] = frozenset()


def _b64json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            "id_token_invalid", f"the ID token {what} is not base64url JSON"
        ) from None
    if not isinstance(value, dict):
        raise ProtocolError("id_token_invalid", f"the ID token {what} is not a JSON object")
    return value


def read_header(token: str) -> dict[str, Any]:
    """The protected header of a compact JWS; JWE, JSON serialisation and junk are refused."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise ProtocolError("id_token_invalid", "the ID token is not a compact JWS")
    header = _b64json(token.split(".", 1)[0], "header")
    if not isinstance(header.get("alg"), str):
        raise ProtocolError("id_token_invalid", "the ID token header has no alg")
    if "kid" in header and not isinstance(header["kid"], str):
        raise ProtocolError("id_token_invalid", "the ID token header kid is not a string")
    return header


def check_header(header: dict[str, Any], allowed: Collection[str]) -> str:
    """The token's algorithm if the connection allows it; `crit` extensions are never understood."""
    alg = header["alg"]
    if alg.lower() == "none" or alg not in allowed:
        raise ProtocolError(
            "weak_alg", f"ID token algorithm {alg!r} is not allowed (allowed: {', '.join(allowed)})"
        )
    crit = header.get("crit")
    if crit is not None:
        names = crit if isinstance(crit, list) else [crit]
        unknown = [n for n in names if n not in UNDERSTOOD_CRIT]
        raise ProtocolError("id_token_invalid", f"unsupported critical header(s) {unknown!r}")
    return alg


def hmac_key(secret: str) -> Key:
    """HS* tokens are keyed with the client secret (Core §10.1), never with a JWKS entry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return OctKey.import_key(secret.encode())


def verify_signature(token: str, key: Key, alg: str) -> dict[str, Any]:
    """Claims of a token whose signature verifies with exactly this key and algorithm."""
    registry = JWSRegistry(algorithms=[alg], strict_check_header=False)
    registry.max_header_length = 8192
    registry.max_payload_length = MAX_TOKEN_BYTES
    try:
        obj = jws.deserialize_compact(token, key, algorithms=[alg], registry=registry)
    except BadSignatureError:
        raise ProtocolError(
            "id_token_invalid", "signature: the ID token signature does not verify"
        ) from None
    except (JoseError, ValueError) as exc:
        raise ProtocolError(
            "id_token_invalid", f"signature: the ID token cannot be verified: {exc}"
        ) from None
    try:
        claims = json.loads(obj.payload)
    except ValueError:
        raise ProtocolError("id_token_invalid", "the ID token payload is not JSON") from None
    if not isinstance(claims, dict):
        raise ProtocolError("id_token_invalid", "the ID token payload is not a JSON object")
    return claims


@dataclass(frozen=True, slots=True)
class Expected:
    """What one ID token must say: for whom, from whom, when and for which login."""

    issuer: str
    client_id: str
    now: float
    skew: float
    nonce: str | None = None
    allowed_tenants: tuple[str, ...] = ()


def _number(claims: dict[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        problem = "missing" if value is None else "not a number"
        raise ProtocolError("id_token_invalid", f"the ID token claim {name} is {problem}")
    return float(value)


def expected_issuer(claims: dict[str, Any], expect: Expected) -> str:
    """The issuer itself, or for an Entra multi-tenant template the token's own tenant."""
    if "{tenantid}" not in expect.issuer:
        return expect.issuer
    tid = claims.get("tid")
    if not isinstance(tid, str) or not tid:
        raise ProtocolError("issuer_mismatch", "multi-tenant ID token without a tid claim")
    if "*" not in expect.allowed_tenants and tid not in expect.allowed_tenants:
        raise ProtocolError("issuer_mismatch", f"tenant {tid} is not in allowed_tenants")
    return expect.issuer.replace("{tenantid}", tid)


def check_audience(claims: dict[str, Any], client_id: str) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or client_id not in audiences:
        raise ProtocolError(
            "audience_mismatch", f"the ID token audience {aud!r} is not {client_id}"
        )
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is None:
        raise ProtocolError("audience_mismatch", "several audiences and no azp claim")
    if azp is not None and azp != client_id:
        raise ProtocolError("audience_mismatch", f"the ID token azp {azp!r} is not {client_id}")


def check_times(claims: dict[str, Any], now: float, skew: float) -> None:
    exp = _number(claims, "exp", required=True)
    iat = _number(claims, "iat", required=True)
    nbf = _number(claims, "nbf", required=False)
    assert exp is not None and iat is not None
    if now > exp + skew:
        raise ProtocolError("expired", f"the ID token expired {int(now - exp)} s ago")
    if iat > now + skew:
        raise ProtocolError("not_yet_valid", f"the ID token is issued {int(iat - now)} s ahead")
    if nbf is not None and nbf > now + skew:
        raise ProtocolError("not_yet_valid", f"the ID token is valid only in {int(nbf - now)} s")


def check_claims(claims: dict[str, Any], expect: Expected) -> None:
    """Every claim check of Core §3.1.3.7 that does not need the signature."""
    issuer = expected_issuer(claims, expect)
    if claims.get("iss") != issuer:
        raise ProtocolError(
            "issuer_mismatch", f"the ID token issuer {claims.get('iss')!r} is not {issuer!r}"
        )
    check_audience(claims, expect.client_id)
    check_times(claims, expect.now, expect.skew)
    if expect.nonce is not None:
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(nonce, expect.nonce):
            raise ProtocolError("nonce_mismatch", "the ID token nonce is missing or wrong")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise ProtocolError("id_token_invalid", "the ID token has no sub claim")


def check_at_hash(claims: dict[str, Any], alg: str, access_token: str | None) -> None:
    """A present `at_hash` must match the access token issued with it (Core §3.2.2.9)."""
    at_hash = claims.get("at_hash")
    if at_hash is None or access_token is None:
        return
    bits = 512 if alg.endswith("512") or alg == "EdDSA" else 384 if alg.endswith("384") else 256
    digest = hashlib.new(f"sha{bits}", access_token.encode("ascii", "replace")).digest()
    half = base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
    if not isinstance(at_hash, str) or not hmac.compare_digest(at_hash, half):
        raise ProtocolError("id_token_invalid", "the ID token at_hash does not match")
