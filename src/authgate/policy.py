"""The access rules, as pure functions: who may sign in, as what, and where they may go.

Nothing here touches a store or the network, so every rule is testable in
isolation and the same rules serve SAML and OIDC. `admission.py` applies the
identity rules, with the store's (directory, user record), at sign-in, test
sign-in and refresh; `web/decision.py` applies the per-request narrowing.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import MultiMapping

from authgate.errors import PolicyDenied
from authgate.identity import Identity
from authgate.session.sessions import Session
from authgate.settings import AccessSettings, ConnectionBase, ConnectionRoleMapping


@dataclass(frozen=True, slots=True)
class AccessRules:
    """The access settings of one connection, merged with the global ones at start-up.

    An email domain must be in every non-empty allow-list (global and per
    connection), so a connection can narrow the global list but never widen it.
    """

    connection: str
    require_email_verified: bool
    domain_lists: tuple[frozenset[str], ...]
    role_map: dict[str, tuple[str, ...]]
    default_role: str

    @classmethod
    def build(cls, conn: ConnectionBase, access: AccessSettings) -> AccessRules:
        """A connection's own `role_mappings` replace the global ones (those for all
        connections and those naming it); its `default_role` replaces the global default."""
        mappings: list[ConnectionRoleMapping] = list(conn.role_mappings) or [
            m for m in access.role_mappings if m.connection in (None, conn.id)
        ]
        role_map: dict[str, tuple[str, ...]] = {}
        for mapping in mappings:
            role_map[mapping.group] = role_map.get(mapping.group, ()) + tuple(mapping.roles)
        lists = (access.allowed_domains, conn.allowed_domains)
        return cls(
            connection=conn.id,
            require_email_verified=conn.require_email_verified,
            domain_lists=tuple(frozenset(d) for d in lists if d),
            role_map=role_map,
            default_role=conn.default_role or access.default_role,
        )


def check_identity(identity: Identity, rules: AccessRules) -> None:
    """Raise `PolicyDenied` with the SPEC §8 reason when the identity may not enter."""
    if not identity.email:
        raise PolicyDenied("email_unverified", "the identity provider sent no email address")
    if rules.require_email_verified and not identity.email_verified:
        raise PolicyDenied("email_unverified", f"{identity.email} is not verified")
    if any(identity.email_domain not in allowed for allowed in rules.domain_lists):
        raise PolicyDenied(
            "domain_not_allowed", f"{identity.email_domain} is not an allowed email domain"
        )


def roles_for(
    groups: tuple[str, ...], rules: AccessRules, assigned: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """Mapped roles of the groups plus roles assigned to the user; else the default role."""
    roles: list[str] = list(assigned)
    for group in groups:
        roles.extend(rules.role_map.get(group, ()))
    unique = tuple(dict.fromkeys(roles))
    return unique or (rules.default_role,)


def _wanted(query: MultiMapping[str], name: str) -> set[str]:
    return {v.strip() for v in query.get(name, "").split(",") if v.strip()}


def permitted(query: MultiMapping[str], session: Session) -> bool:
    """oauth2-proxy style `?allowed_groups=a,b` / `?allowed_roles=` narrowing per location."""
    groups, roles = _wanted(query, "allowed_groups"), _wanted(query, "allowed_roles")
    if groups and not groups & set(session.groups):
        return False
    return not (roles and not roles & set(session.roles))
