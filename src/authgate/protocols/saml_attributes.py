"""From a validated assertion to the one `Identity` authgate hands on.

Built in: the claim URIs Entra ID sends, the simple names Okta and Google
use, LDAP/eduPerson names, and their OID forms. A per-connection override
names the one attribute to use for a field instead.
"""

from __future__ import annotations

from authgate.errors import PolicyDenied, ProtocolError
from authgate.identity import Identity
from authgate.protocols.saml_validate import AssertionData
from authgate.protocols.saml_xml import NAMEID_FORMATS
from authgate.settings import SamlAttributes

_MS = "http://schemas.microsoft.com/"
_XMLSOAP = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
GROUPS_OVERAGE = _MS + "claims/groups.link"

CANDIDATES: dict[str, tuple[str, ...]] = {
    "email": (
        _XMLSOAP + "emailaddress",
        "email",
        "mail",
        "emailAddress",
        "Email",
        "urn:oid:0.9.2342.19200300.100.1.3",
        "urn:oid:1.2.840.113549.1.9.1",
    ),
    "name": (
        _MS + "identity/claims/displayname",
        "displayName",
        "displayname",
        "urn:oid:2.16.840.1.113730.3.1.241",
        "cn",
        "urn:oid:2.5.4.3",
    ),
    "given_name": (
        _XMLSOAP + "givenname",
        "givenName",
        "firstName",
        "first_name",
        "urn:oid:2.5.4.42",
    ),
    "family_name": (
        _XMLSOAP + "surname",
        "sn",
        "surname",
        "lastName",
        "last_name",
        "urn:oid:2.5.4.4",
    ),
    "upn": (_XMLSOAP + "name",),
    "eppn": ("eduPersonPrincipalName", "urn:oid:1.3.6.1.4.1.5923.1.1.1.6"),
    "uid": ("uid", "urn:oid:0.9.2342.19200300.100.1.1"),
    "object_id": (_MS + "identity/claims/objectidentifier",),
    "tenant_id": (_MS + "identity/claims/tenantid",),
}
GROUP_CANDIDATES: tuple[str, ...] = (
    _MS + "ws/2008/06/identity/claims/groups",
    _MS + "ws/2008/06/identity/claims/role",
    "http://schemas.xmlsoap.org/claims/Group",
    "groups",
    "Groups",
    "memberOf",
    "isMemberOf",
    "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
    "eduPersonAffiliation",
    "urn:oid:1.3.6.1.4.1.5923.1.1.1.1",
)
_EMAIL_NAMEID = NAMEID_FORMATS["emailAddress"]
_UNSPECIFIED = (None, NAMEID_FORMATS["unspecified"])


def _first(attributes: dict[str, tuple[str, ...]], names: tuple[str, ...]) -> str | None:
    for name in names:
        for value in attributes.get(name, ()):
            if value:
                return value
    return None


def _field(data: AssertionData, field: str, mapping: SamlAttributes) -> str | None:
    override = getattr(mapping, field, None)
    return _first(data.attributes, (override,) if override else CANDIDATES[field])


def _looks_like_email(value: str) -> bool:
    local, at, domain = value.partition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in value))


def _email(data: AssertionData, override: str | None) -> str | None:
    """The mapped attribute, else an email-shaped NameID of format emailAddress/unspecified."""
    if override:
        return _first(data.attributes, (override,))
    found = _first(data.attributes, CANDIDATES["email"])
    if found:
        return found
    if data.name_id_format == _EMAIL_NAMEID or data.name_id_format in _UNSPECIFIED:
        return data.name_id if _looks_like_email(data.name_id) else None
    return None


def _groups(data: AssertionData, override: str | None) -> tuple[str, ...]:
    if override:
        return data.attributes.get(override, ())
    if GROUPS_OVERAGE in data.attributes and not data.attributes.get(GROUP_CANDIDATES[0]):
        raise ProtocolError(
            "groups_overage",
            "Entra ID sent a groups link instead of the groups (more than 150):"
            " emit only groups assigned to the application, or use app roles",
        )
    groups: list[str] = []
    for name in GROUP_CANDIDATES:
        groups.extend(data.attributes.get(name, ()))
    return tuple(dict.fromkeys(g for g in groups if g))


def _match_value(data: AssertionData, email: str | None, match_key: str) -> str:
    """The value of the connection's match key; without it the person cannot be linked."""
    if match_key == "name_id":
        return data.name_id
    name = "email" if match_key == "email" else match_key.removeprefix("attribute:")
    value = email if match_key == "email" else _first(data.attributes, (name,))
    if not value:
        raise PolicyDenied(
            "user_not_provisioned", f"the assertion has no {name}, the connection's match key"
        )
    return value


def to_identity(
    connection: str, data: AssertionData, mapping: SamlAttributes, match_key: str = "name_id"
) -> Identity:
    """The identity an assertion proves. A SAML IdP vouches for the address it asserts."""
    fields = {field: _field(data, field, mapping) for field in CANDIDATES}
    email = _email(data, mapping.email)
    name = fields["name"] or " ".join(
        part for part in (fields["given_name"], fields["family_name"]) if part
    )
    username = _first(data.attributes, (mapping.username,)) if mapping.username else None
    extra = {k: v for k, v in fields.items() if v and k != "name"}
    return Identity(
        connection=connection,
        subject=data.name_id,
        email=email,
        email_verified=email is not None,
        name=name or None,
        username=username,
        groups=_groups(data, mapping.groups),
        attributes={**extra, "name_id_format": data.name_id_format, "idp": data.issuer},
        session_not_after=data.session_not_on_or_after,
        match_value=_match_value(data, email, match_key),
        idp_session=data.session_index,
        protocol_data={
            "name_id": data.name_id,
            "name_id_format": data.name_id_format,
            "name_qualifier": data.name_qualifier,
            "sp_name_qualifier": data.sp_name_qualifier,
            "session_index": data.session_index,
            "idp": data.issuer,
        },
    )
