"""Attribute mapping into `Identity`, and the SAML connection settings' validation."""

from __future__ import annotations

import pytest

from authgate.errors import ProtocolError
from authgate.protocols.saml_attributes import to_identity
from authgate.protocols.saml_validate import AssertionData
from authgate.settings import ConfigError, SamlAttributes, parse_settings
from tests.saml_idp import KeyPair

EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"


def data(
    attributes: dict[str, tuple[str, ...]], name_id: str = "u-1", fmt: str | None = PERSISTENT
):
    return AssertionData(
        issuer="https://idp",
        assertion_id="_a",
        in_response_to="id-1",
        name_id=name_id,
        name_id_format=fmt,
        name_qualifier=None,
        sp_name_qualifier=None,
        session_index="_s",
        session_not_on_or_after=None,
        not_on_or_after=0,
        attributes=attributes,
    )


def test_okta_simple_names():
    identity = to_identity(
        "okta",
        data(
            {
                "email": ("ann@example.com",),
                "firstName": ("Ann",),
                "lastName": ("Lee",),
                "groups": ("Admins", "Staff"),
            }
        ),
        SamlAttributes(),
    )
    assert identity.subject == "u-1"
    assert identity.email == "ann@example.com" and identity.email_verified
    assert identity.name == "Ann Lee"
    assert identity.groups == ("Admins", "Staff")


def test_ldap_and_oid_names():
    identity = to_identity(
        "shib",
        data(
            {
                "urn:oid:0.9.2342.19200300.100.1.3": ("bo@uni.edu",),
                "urn:oid:2.16.840.1.113730.3.1.241": ("Bo Ek",),
                "urn:oid:1.3.6.1.4.1.5923.1.1.1.6": ("bo@uni.edu",),
                "urn:oid:1.3.6.1.4.1.5923.1.5.1.1": ("cn=staff",),
            }
        ),
        SamlAttributes(),
    )
    assert identity.email == "bo@uni.edu"
    assert identity.name == "Bo Ek"
    assert identity.attributes["eppn"] == "bo@uni.edu"
    assert identity.groups == ("cn=staff",)


def test_mail_givenname_sn_displayname():
    identity = to_identity(
        "ldap",
        data(
            {
                "mail": ("cy@example.com",),
                "givenName": ("Cy",),
                "sn": ("Ro",),
                "displayName": ("Cy R.",),
            }
        ),
        SamlAttributes(),
    )
    assert (identity.email, identity.name) == ("cy@example.com", "Cy R.")
    assert identity.attributes["family_name"] == "Ro"


def test_email_name_id_when_no_email_attribute():
    identity = to_identity("g", data({}, "dee@example.com", EMAIL), SamlAttributes())
    assert identity.email == "dee@example.com"


def test_persistent_name_id_is_never_taken_as_email():
    identity = to_identity("g", data({}, "dee@example.com", PERSISTENT), SamlAttributes())
    assert identity.email is None and not identity.email_verified


def test_override_replaces_the_built_in_names():
    mapping = SamlAttributes(email="corpMail", groups="roles", username="uid")
    identity = to_identity(
        "c",
        data(
            {
                "email": ("ignored@example.com",),
                "corpMail": ("eve@corp.example",),
                "groups": ("ignored",),
                "roles": ("auditor",),
                "uid": ("eve",),
            }
        ),
        mapping,
    )
    assert identity.email == "eve@corp.example"
    assert identity.groups == ("auditor",)
    assert identity.username == "eve"


def test_entra_groups_overage_is_refused():
    link = "http://schemas.microsoft.com/claims/groups.link"
    with pytest.raises(ProtocolError) as err:
        to_identity(
            "e",
            data({link: ("https://graph.microsoft.com/v1.0/users/x/getMemberObjects",)}),
            SamlAttributes(),
        )
    assert err.value.reason == "groups_overage"


# --- settings ---------------------------------------------------------------------------------


def settings(tmp_path, **conn):
    metadata = tmp_path / "idp.xml"
    metadata.write_text("<x/>")
    raw_conn = {"id": "corp", "name": "Corp", "type": "saml", "idp_metadata_file": str(metadata)}
    raw_conn.update(conn)
    raw = {
        "public_url": "https://app.example.com",
        "upstream": {"url": "http://127.0.0.1:9"},
        "connections": [raw_conn],
    }
    return parse_settings(raw, "t.yaml")


def problems(tmp_path, **conn) -> str:
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, **conn)
    return "\n".join(err.value.problems)


def test_exactly_one_metadata_source(tmp_path):
    assert "exactly one of idp_metadata_file" in problems(
        tmp_path, idp_metadata_url="https://idp.example.com/md"
    )
    assert "found none" in problems(tmp_path, idp_metadata_file=None)


def test_missing_metadata_file(tmp_path):
    assert "does not exist" in problems(tmp_path, idp_metadata_file=str(tmp_path / "nope.xml"))


def test_sign_requests_needs_a_signing_key(tmp_path):
    assert "sign_requests needs" in problems(tmp_path, sign_requests=True)


def test_some_signature_must_be_required(tmp_path):
    assert "at least one signature" in problems(
        tmp_path, want_assertions_signed=False, want_response_signed=False
    )


def test_hand_given_idp_certificate_must_parse(tmp_path):
    idp = {"entity_id": "x", "sso_url": "https://idp/sso", "certificates": ["bm90IGEgY2VydA=="]}
    assert "X.509 certificate" in problems(tmp_path, idp_metadata_file=None, idp=idp)
    idp["certificates"] = []
    assert "at least one IdP signing certificate" in problems(
        tmp_path, idp_metadata_file=None, idp=idp
    )


def test_sp_key_pair_must_parse(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    pair = KeyPair.create("sp")
    cert = tmp_path / "sp.crt"
    cert.write_bytes(pair.cert_pem)
    report = problems(tmp_path, sp_keys=[{"key_file": str(bad), "cert_file": str(cert)}])
    assert "unencrypted PEM private key" in report


def test_unknown_key_is_refused(tmp_path):
    assert "unknown key" in problems(tmp_path, want_assertion_signed=True)


def test_transient_name_id_is_not_offered(tmp_path):
    assert "name_id_format" in problems(tmp_path, name_id_format="transient")
