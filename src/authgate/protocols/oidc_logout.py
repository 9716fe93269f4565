"""OpenID Connect Back-Channel Logout 1.0: what makes a logout token one to act on.

The provider POSTs a signed JWT to the connection's back-channel endpoint
when someone signs out there. It is checked like an ID token (signature,
issuer, audience, times) and then by §2.6: the back-channel `events`
member, a `sid` and/or `sub`, no `nonce` (so an ID token can never be
replayed as a logout token), a `jti` used once, an `iat` within the clock
skew, and a `typ` of `logout+jwt` when one is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authgate.errors import ProtocolError
from authgate.protocols.oidc_tokens import Expected, check_audience, expected_issuer

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
ACCEPTED_TYPES = frozenset({"logout+jwt", "application/logout+jwt", "jwt"})
# A logout token older than this (beyond the clock skew) is refused: it is meant at once.
MAX_AGE = 300.0
LOGOUT_JTI_TTL = MAX_AGE + 3600.0


@dataclass(frozen=True, slots=True)
class LogoutToken:
    """Whose sessions to end: the provider session (`sid`), the subject, or both."""

    jti: str
    sub: str | None
    sid: str | None


def _invalid(detail: str) -> ProtocolError:
    return ProtocolError("id_token_invalid", f"logout token: {detail}")


def _text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _invalid(f"{name} is not a string")
    return value


def _check_times(claims: dict[str, Any], now: float, skew: float) -> None:
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise _invalid("iat is missing or not a number")
    if iat > now + skew:
        raise ProtocolError("not_yet_valid", f"the logout token is issued {int(iat - now)} s ahead")
    if now - iat > MAX_AGE + skew:
        raise ProtocolError("expired", f"the logout token was issued {int(now - iat)} s ago")
    exp = claims.get("exp")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int | float)):
        raise _invalid("exp is not a number")
    if exp is not None and now > exp + skew:
        raise ProtocolError("expired", f"the logout token expired {int(now - exp)} s ago")


def read_logout_token(
    header: dict[str, Any], claims: dict[str, Any], expect: Expected
) -> LogoutToken:
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES):
        raise _invalid("typ is not logout+jwt")
    issuer = expected_issuer(claims, expect)
    if claims.get("iss") != issuer:
        raise ProtocolError("issuer_mismatch", f"the logout token issuer is not {issuer!r}")
    check_audience(claims, expect.client_id)
    _check_times(claims, expect.now, expect.skew)
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
        raise _invalid("no back-channel logout event")
    if "nonce" in claims:
        raise _invalid("a logout token carries no nonce")
    jti = _text(claims, "jti")
    if jti is None:
        raise _invalid("no jti")
    sub, sid = _text(claims, "sub"), _text(claims, "sid")
    if sub is None and sid is None:
        raise _invalid("names neither sid nor sub")
    return LogoutToken(jti=jti, sub=sub, sid=sid)
