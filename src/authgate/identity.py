"""The single hand-off between a protocol and the protocol-blind rest of authgate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the IdP says signed in; built by SAML or OIDC code and nothing else.

    `subject` is the IdP's stable identifier (NameID or `sub`). What links the
    person to an authgate user record, together with `connection`, is the value
    of the connection's match key (`match_value`), which is the subject unless
    the connection names email or an attribute.
    """

    connection: str
    subject: str
    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    username: str | None = None
    groups: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    session_not_after: float | None = None
    protocol_data: dict[str, Any] = field(default_factory=dict)
    match_value: str | None = None
    # The IdP's id for this sign-in (SAML SessionIndex), by which its logout names the session.
    idp_session: str | None = None
    # When the protocol wants the claims renewed (OIDC refresh); None: never.
    refresh_at: float | None = None

    @property
    def link_value(self) -> str:
        return self.match_value or self.subject

    @property
    def email_domain(self) -> str | None:
        if not self.email or "@" not in self.email:
            return None
        return self.email.rsplit("@", 1)[1].lower()
