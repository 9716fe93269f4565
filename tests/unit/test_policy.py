"""Every policy decision, with the exact reason code of each refusal."""

from __future__ import annotations

import pytest

from authgate.errors import PolicyDenied
from authgate.identity import Identity
from authgate.policy import AccessRules, check_identity, roles_for
from authgate.settings import AccessSettings, OidcConnection


def conn(**overrides) -> OidcConnection:
    fields = {
        "id": "corp",
        "name": "Corp",
        "type": "oidc",
        "issuer": "https://idp.example.com",
        "client_id": "c",
    }
    fields.update(overrides)
    return OidcConnection(**fields)


def ident(email: str | None = "alice@example.com", verified: bool = True, groups=()) -> Identity:
    return Identity(
        connection="corp", subject="s1", email=email, email_verified=verified, groups=tuple(groups)
    )


def rules(access: AccessSettings | None = None, **conn_overrides) -> AccessRules:
    return AccessRules.build(conn(**conn_overrides), access or AccessSettings())


def refused(identity: Identity, r: AccessRules) -> str:
    with pytest.raises(PolicyDenied) as exc:
        check_identity(identity, r)
    return exc.value.reason


def test_verified_email_is_allowed_by_default():
    check_identity(ident(), rules())


def test_unverified_email_is_refused():
    assert refused(ident(verified=False), rules()) == "email_unverified"


def test_connection_may_opt_out_of_email_verification():
    check_identity(ident(verified=False), rules(require_email_verified=False))


def test_missing_email_is_refused_even_when_verification_is_off():
    assert refused(ident(email=None), rules(require_email_verified=False)) == "email_unverified"


def test_global_domain_allow_list():
    r = rules(AccessSettings(allowed_domains=["example.com"]))
    check_identity(ident("bob@EXAMPLE.com"), r)
    assert refused(ident("eve@evil.com"), r) == "domain_not_allowed"


def test_lookalike_domains_are_not_allowed():
    r = rules(AccessSettings(allowed_domains=["example.com"]))
    for email in ("eve@evilexample.com", "eve@example.com.evil", "eve@sub.example.com"):
        assert refused(ident(email), r) == "domain_not_allowed"


def test_connection_domains_narrow_but_never_widen_the_global_list():
    access = AccessSettings(allowed_domains=["example.com", "partner.com"])
    r = rules(access, allowed_domains=["partner.com", "other.com"])
    check_identity(ident("p@partner.com"), r)
    assert refused(ident("a@example.com"), r) == "domain_not_allowed"
    assert refused(ident("o@other.com"), r) == "domain_not_allowed"


def test_connection_domains_alone():
    r = rules(allowed_domains=["@Partner.com"])
    check_identity(ident("p@partner.com"), r)
    assert refused(ident("a@example.com"), r) == "domain_not_allowed"


def test_role_mapping_by_group_name_and_id():
    access = AccessSettings(
        role_mappings=[
            {"group": "Admins", "roles": ["admin"]},
            {"group": "5f1c2a9e-0000-4000-8000-000000000001", "roles": ["editor", "viewer"]},
            {"group": "Other", "roles": ["auditor"], "connection": "elsewhere"},
        ]
    )
    r = rules(access)
    assert roles_for(("Admins",), r) == ("admin",)
    assert roles_for(("5f1c2a9e-0000-4000-8000-000000000001", "Admins"), r) == (
        "editor",
        "viewer",
        "admin",
    )
    assert roles_for(("Other",), r) == ("viewer",), "a mapping for another connection is ignored"


def test_unmatched_users_get_the_default_role():
    assert roles_for(("Nobody",), rules(AccessSettings(default_role="guest"))) == ("guest",)


def test_group_names_match_exactly():
    r = rules(AccessSettings(role_mappings=[{"group": "Admins", "roles": ["admin"]}]))
    assert roles_for(("admins", "Admins ", "Admins2"), r) == ("viewer",)


def test_assigned_roles_are_kept_and_deduplicated():
    r = rules(AccessSettings(role_mappings=[{"group": "Admins", "roles": ["admin"]}]))
    assert roles_for(("Admins",), r, ("admin", "billing")) == ("admin", "billing")


def test_a_connections_default_role_replaces_the_global_one():
    access = AccessSettings(default_role="guest")
    assert roles_for((), rules(access)) == ("guest",)
    assert roles_for((), rules(access, default_role="reader")) == ("reader",)


def test_a_connections_role_mappings_replace_the_global_ones():
    access = AccessSettings(
        role_mappings=[
            {"group": "Admins", "roles": ["admin"]},
            {"group": "Ops", "roles": ["operator"], "connection": "corp"},
        ]
    )
    assert roles_for(("Admins", "Ops"), rules(access)) == ("admin", "operator")
    own = rules(access, role_mappings=[{"group": "Sec-Admins", "roles": ["admin"]}])
    assert roles_for(("Admins", "Ops"), own) == ("viewer",)
    assert roles_for(("Sec-Admins",), own) == ("admin",)


def test_a_connections_role_mapping_cannot_name_a_connection():
    with pytest.raises(ValueError, match="connection"):
        conn(role_mappings=[{"group": "A", "roles": ["x"], "connection": "other"}])
