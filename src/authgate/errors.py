"""One error tree for everything that can refuse a request or a login.

Each class carries the machine-readable reason code of SPEC §8 and the HTTP
status it maps to, so one middleware can turn any of them into the error
page, the JSON body, the audit event and the metric label::

    AuthgateError
     ├── LoginFailed            a sign-in attempt was refused (reason codes of §8)
     │    ├── ProtocolError     the IdP's message is invalid (signature, audience, ...)
     │    ├── PolicyDenied      the identity is valid but not allowed in
     │    └── LoginStateError   the pre-login state is missing, expired or not ours
     ├── BadRequest             a request target authgate will not guess about (400)
     ├── Unauthenticated        no valid session (401 / redirect to login)
     ├── Forbidden              a valid session that may not do this (403)
     ├── StoreUnavailable       the session store cannot be reached (503, fail closed)
     └── UpstreamError          the protected app cannot be reached (502 / 504)
"""

from __future__ import annotations

from typing import ClassVar

LOGIN_REASONS: frozenset[str] = frozenset(
    {
        "weak_alg",
        "replayed",
        "protocol_mismatch",
        "id_token_invalid",
        "decrypt_failed",
        "signature_invalid",
        "audience_mismatch",
        "issuer_mismatch",
        "expired",
        "not_yet_valid",
        "state_mismatch",
        "state_expired",
        "connection_changed",
        "nonce_mismatch",
        "email_unverified",
        "domain_not_allowed",
        "user_not_provisioned",
        "user_disabled",
        "email_conflict",
        "groups_overage",
        "idp_error",
        "metadata_unavailable",
        "invalid_request",
        "not_a_member",
    }
)


class AuthgateError(Exception):
    """Base of every refusal; `reason` is the stable code shown to operators."""

    status: ClassVar[int] = 500
    default_reason: ClassVar[str] = "internal_error"

    def __init__(self, reason: str | None = None, detail: str = "") -> None:
        self.reason = reason or self.default_reason
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)


class LoginFailed(AuthgateError):
    """A sign-in was refused; the connection's last failure records the reason."""

    status = 403
    default_reason = "idp_error"

    def __init__(self, reason: str | None = None, detail: str = "") -> None:
        super().__init__(reason, detail)
        if self.reason not in LOGIN_REASONS:
            raise ValueError(f"unknown login failure reason {self.reason!r}")


class ProtocolError(LoginFailed):
    """The identity provider's message failed validation."""

    status = 400


class PolicyDenied(LoginFailed):
    """The person proved who they are but policy keeps them out."""

    status = 403


class LoginStateError(LoginFailed):
    """The browser came back without a matching pre-login state."""

    status = 400
    default_reason = "state_expired"


class BadRequest(AuthgateError):
    """A request authgate refuses to interpret, rather than risk reading it differently."""

    status = 400
    default_reason = "invalid_request"


class Unauthenticated(AuthgateError):
    status = 401
    default_reason = "unauthenticated"


class Forbidden(AuthgateError):
    status = 403
    default_reason = "forbidden"


class StoreUnavailable(AuthgateError):
    """Raised for any store failure so that requests fail closed, never open."""

    status = 503
    default_reason = "store_unavailable"


class UpstreamError(AuthgateError):
    status = 502
    default_reason = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    default_reason = "upstream_timeout"
