"""The development IdP's built-in test users: one per outcome a newcomer should see.

Every user has the same password so the demo needs no instructions beyond
one line; the notes say what authgate's demo policy will make of each one.

A user who gets in is offered to one protocol only, so each of the demo's two
connections (one per protocol) has people of its own: authgate never merges
two identity-provider accounts by email, so one person signing in through
both would be refused the second time with `email_conflict`. Those refused
before any account exists (unverified email, domain not allowed) are offered
to both, so either button shows their refusal.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

PASSWORD = "demo"  # noqa: S105 - the published password of the test users
Protocol = Literal["oidc", "saml"]
PROTOCOL_NAMES: dict[Protocol, str] = {"oidc": "OpenID Connect", "saml": "SAML"}


@dataclass(frozen=True, slots=True)
class DevUser:
    """A person the development IdP can vouch for; `id` is the stable subject / NameID."""

    id: str
    email: str
    name: str
    given_name: str
    family_name: str
    groups: tuple[str, ...]
    email_verified: bool = True
    tag: str = ""
    note: str = ""
    protocols: tuple[Protocol, ...] = ("oidc", "saml")


USERS: tuple[DevUser, ...] = (
    DevUser(
        id="u-alice-1001",
        email="alice@example.com",
        name="Alice Admin",
        given_name="Alice",
        family_name="Admin",
        groups=("admins", "engineering"),
        tag="admins",
        note="admins group: gets the admin role",
        protocols=("saml",),
    ),
    DevUser(
        id="u-bob-1002",
        email="bob@example.com",
        name="Bob User",
        given_name="Bob",
        family_name="User",
        groups=("users",),
        tag="users",
        note="users group: an ordinary viewer",
        protocols=("saml",),
    ),
    DevUser(
        id="u-dave-1005",
        email="dave@partner.example",
        name="Dave Partner",
        given_name="Dave",
        family_name="Partner",
        groups=("partners", "engineering"),
        tag="engineering",
        note="engineering group: gets the editor role",
        protocols=("oidc",),
    ),
    DevUser(
        id="u-carol-1003",
        email="carol@partner.example",
        name="Carol Partner",
        given_name="Carol",
        family_name="Partner",
        groups=("users", "partners"),
        email_verified=False,
        tag="unverified email",
        note="email not verified: refused with email_unverified",
    ),
    DevUser(
        id="u-mallory-1004",
        email="mallory@evil.example",
        name="Mallory Outsider",
        given_name="Mallory",
        family_name="Outsider",
        groups=("users",),
        tag="domain not allowed",
        note="domain not allowed: refused with domain_not_allowed",
    ),
)


def offered_to(protocol: Protocol, users: tuple[DevUser, ...] = USERS) -> tuple[DevUser, ...]:
    """The users who may sign in through `protocol`, in their listed order."""
    return tuple(u for u in users if protocol in u.protocols)


def find(email: str, users: tuple[DevUser, ...] = USERS) -> DevUser | None:
    wanted = email.strip().lower()
    return next((u for u in users if u.email == wanted), None)


def by_id(user_id: str, users: tuple[DevUser, ...] = USERS) -> DevUser | None:
    return next((u for u in users if u.id == user_id), None)


def authenticate(email: str, password: str, users: tuple[DevUser, ...] = USERS) -> DevUser | None:
    """The user, if the password is right; compared in constant time like a real IdP would."""
    user = find(email, users)
    good = hmac.compare_digest(password.encode(), PASSWORD.encode())
    return user if user is not None and good else None
