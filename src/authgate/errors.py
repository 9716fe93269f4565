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
     ├── UpstreamError          the protected app cannot be reached (502 / 504)
     │    └── UpstreamTimeout
     └── OperatorError          a problem for the operator to fix, handled where it is raised
          ├── ConfigError          settings.base: the config file (the CLI prints `problems`)
          │    └── RetirementRefused  retirement: no one could sign in as admin afterwards
          ├── MetadataError        protocols.saml_metadata: unusable IdP metadata
          ├── FetchError           protocols.oidc_http: an IdP that cannot be reached or read
          └── DirectorySyncError   directory_sync: a sync that did not complete

An `OperatorError`'s message is worded for the operator and may quote documents
and URLs, so it goes to the log, the CLI or readiness, never to a client. Each
is caught where it is raised: the CLI prints it, a background task records it,
a protocol turns it into a §8 login reason. Should one escape into a request,
the client sees what any bug gives: 500 `internal_error`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class Reason(StrEnum):
    """Every reason code authgate answers with (SPEC §8 and the admin and HTTP ones).

    A `StrEnum`, so a code is written `Reason.REPLAYED` and a typo fails at
    import and in the type checker, not as a 500; tests/unit/test_reasons.py
    holds every literal still written as a string, and every page hint, to it.
    """

    WEAK_ALG = "weak_alg"
    REPLAYED = "replayed"
    PROTOCOL_MISMATCH = "protocol_mismatch"
    ID_TOKEN_INVALID = "id_token_invalid"  # noqa: S105 - a reason code, not a secret
    DECRYPT_FAILED = "decrypt_failed"
    SIGNATURE_INVALID = "signature_invalid"
    AUDIENCE_MISMATCH = "audience_mismatch"
    ISSUER_MISMATCH = "issuer_mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    STATE_MISMATCH = "state_mismatch"
    STATE_EXPIRED = "state_expired"
    CONNECTION_CHANGED = "connection_changed"
    NONCE_MISMATCH = "nonce_mismatch"
    EMAIL_UNVERIFIED = "email_unverified"
    DOMAIN_NOT_ALLOWED = "domain_not_allowed"
    USER_NOT_PROVISIONED = "user_not_provisioned"
    USER_DISABLED = "user_disabled"
    EMAIL_CONFLICT = "email_conflict"
    GROUPS_OVERAGE = "groups_overage"
    IDP_ERROR = "idp_error"
    METADATA_UNAVAILABLE = "metadata_unavailable"
    INVALID_REQUEST = "invalid_request"
    NOT_A_MEMBER = "not_a_member"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    ADMIN_ROLE_REQUIRED = "admin_role_required"
    CROSS_ORIGIN_REQUEST = "cross_origin_request"
    SETUP_LINK_INVALID = "setup_link_invalid"
    LAST_ADMIN = "last_admin"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TOO_LARGE = "request_too_large"
    HEADER_TOO_LARGE = "header_too_large"
    STORE_UNAVAILABLE = "store_unavailable"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    INTERNAL_ERROR = "internal_error"


# The codes a refused sign-in may carry (a connection's last failure records one).
LOGIN_REASONS: frozenset[str] = frozenset(
    {
        Reason.WEAK_ALG, Reason.REPLAYED, Reason.PROTOCOL_MISMATCH, Reason.ID_TOKEN_INVALID,
        Reason.DECRYPT_FAILED, Reason.SIGNATURE_INVALID, Reason.AUDIENCE_MISMATCH,
        Reason.ISSUER_MISMATCH, Reason.EXPIRED, Reason.NOT_YET_VALID, Reason.STATE_MISMATCH,
        Reason.STATE_EXPIRED, Reason.CONNECTION_CHANGED, Reason.NONCE_MISMATCH,
        Reason.EMAIL_UNVERIFIED, Reason.DOMAIN_NOT_ALLOWED, Reason.USER_NOT_PROVISIONED,
        Reason.USER_DISABLED, Reason.EMAIL_CONFLICT, Reason.GROUPS_OVERAGE, Reason.IDP_ERROR,
        Reason.METADATA_UNAVAILABLE, Reason.INVALID_REQUEST, Reason.NOT_A_MEMBER,
    }
)  # fmt: skip


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


class OperatorError(AuthgateError):
    """A problem worded for the operator; `detail` is that message, `str()` gives it unchanged."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        Exception.__init__(self, message)
        self.reason = reason or self.default_reason
        self.detail = message
