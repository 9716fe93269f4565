"""Documents produced by real Entra ID, Okta and Google Workspace tenants (tests/fixtures).

They are used exactly as downloaded or captured. Time checks are relaxed by
choosing `now` inside each response's validity window; nothing else is.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re

import pytest

from authgate.errors import ProtocolError
from authgate.protocols.saml_attributes import to_identity
from authgate.protocols.saml_crypto import XmlSec
from authgate.protocols.saml_metadata import MetadataError, parse_idp_metadata
from authgate.protocols.saml_validate import AcsPolicy, validate_response
from authgate.settings import SamlAttributes
from tests.saml_idp import IDP_SAMPLES

SAMPLES = IDP_SAMPLES
OKTA = SAMPLES / "okta-encrypted"
BADGR_TENANT = "https://sts.windows.net/2f277f1e-e5f1-4f62-b595-79c2d13afda4/"
BADGR_ACS = "https://api.test.badgr.com/account/saml2/saml2.egcc/acs/"
XMLSEC = XmlSec()


def read(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def at(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- metadata -------------------------------------------------------------------------------


def test_entra_common_metadata_as_downloaded():
    raw = read("entra_common_federationmetadata.xml")
    assert raw.startswith(b"\xef\xbb\xbf")
    assert b"RoleDescriptor" in raw
    md = parse_idp_metadata(raw)
    assert md.entity_id == "https://sts.windows.net/{tenantid}/"
    assert len(md.signing_certs) == 4
    assert md.sso_endpoint() == ("redirect", "https://login.microsoftonline.com/common/saml2")


def test_entra_tenant_metadata_keeps_both_rollover_certificates():
    md = parse_idp_metadata(read("entra_tenant_federationmetadata.xml"))
    assert md.entity_id == "https://sts.windows.net/81c1df79-e153-4f9d-a101-8dcf04af6c2c/"
    assert len(md.signing_certs) == 2
    assert md.slo_endpoint() is not None


def _signing_cert_of(raw: bytes) -> str:
    match = re.search(rb"<ds:X509Certificate>([^<]+)</ds:X509Certificate>", raw)
    if match is None:
        match = re.search(rb"<X509Certificate>([^<]+)</X509Certificate>", raw)
    assert match is not None
    return match.group(1).decode()


def test_entra_metadata_signature_verifies_when_checking_is_on():
    raw = read("entra_tenant_federationmetadata.xml")
    md = parse_idp_metadata(raw, signing_certs=[_signing_cert_of(raw)], xmlsec=XMLSEC)
    assert len(md.signing_certs) == 2


def test_reformatted_entra_metadata_loads_unchecked_and_is_refused_checked():
    raw = read("entra_tenant_federationmetadata_badgr.xml")
    assert parse_idp_metadata(raw).entity_id == BADGR_TENANT
    with pytest.raises(MetadataError, match="signature does not verify"):
        parse_idp_metadata(raw, signing_certs=[_signing_cert_of(raw)], xmlsec=XMLSEC)


def test_metadata_signature_by_another_certificate_is_refused():
    raw = read("entra_tenant_federationmetadata.xml")
    other = _signing_cert_of(read("entra_tenant_federationmetadata_badgr.xml"))
    with pytest.raises(MetadataError, match="signature does not verify"):
        parse_idp_metadata(raw, signing_certs=[other], xmlsec=XMLSEC)


def test_a_rollover_set_verifies_with_either_certificate_and_refuses_with_neither():
    raw = read("entra_tenant_federationmetadata.xml")
    real = _signing_cert_of(raw)
    other = _signing_cert_of(read("entra_tenant_federationmetadata_badgr.xml"))
    okta = parse_idp_metadata(read("okta_idp_metadata.xml")).signing_certs[0]
    for rollover in ([other, real], [real, other]):
        assert parse_idp_metadata(raw, signing_certs=rollover, xmlsec=XMLSEC).entity_id
    with pytest.raises(MetadataError, match="does not verify with any configured certificate"):
        parse_idp_metadata(raw, signing_certs=[other, okta], xmlsec=XMLSEC)


def test_unsigned_metadata_is_refused_when_a_signing_certificate_is_set():
    raw = read("okta_idp_metadata.xml")
    cert = parse_idp_metadata(raw).signing_certs[0]
    with pytest.raises(MetadataError, match="not signed"):
        parse_idp_metadata(raw, signing_certs=[cert], xmlsec=XMLSEC)


@pytest.mark.parametrize("name", ["okta_idp_metadata.xml", "okta_idp_metadata_crewjam.xml"])
def test_okta_metadata(name):
    md = parse_idp_metadata(read(name))
    assert md.entity_id.startswith("http://www.okta.com/")
    assert len(md.signing_certs) == 1
    assert set(md.sso) == {"redirect", "post"}
    assert md.slo_endpoint() is None


def test_google_workspace_metadata():
    md = parse_idp_metadata(read("google_workspace_idp_metadata.xml"))
    assert md.entity_id == "https://accounts.google.com/o/saml2?idpid=C03ddq7te"
    assert len(md.signing_certs) == 2
    assert md.valid_until == at("2028-10-09T20:03:19Z")


def test_expired_google_metadata_names_the_expiry():
    with pytest.raises(MetadataError, match=r"expired at 2025-11-16T09:08:31Z \(validUntil\)"):
        parse_idp_metadata(read("google_workspace_idp_metadata_2.xml"))


def test_google_metadata_expires_while_loaded():
    md = parse_idp_metadata(read("google_workspace_idp_metadata.xml"))
    assert not md.expired(at("2028-10-09T20:03:18Z"))
    assert md.expired(at("2028-10-09T20:03:19Z"))


# --- Entra ID responses ---------------------------------------------------------------------


def _entra_policy(certs: tuple[str, ...]) -> AcsPolicy:
    return AcsPolicy(
        idp_entity_id=BADGR_TENANT, idp_certs=certs, sp_entity_id=BADGR_ACS, acs_url=BADGR_ACS
    )


def _embedded_cert(raw: bytes) -> str:
    match = re.search(rb"<X509Certificate>([^<]+)</X509Certificate>", raw)
    assert match is not None
    return match.group(1).decode()


@pytest.mark.parametrize(
    ("name", "now", "assertion_id"),
    [
        ("entra_saml_response_badgr_1.xml", "2021-04-09T12:55:00Z", "_81f43d08"),
        ("entra_saml_response_badgr_2.xml", "2021-04-09T13:08:00Z", "_1f2c474c"),
    ],
)
def test_entra_response_maps_to_the_right_identity(name, now, assertion_id):
    raw = read(name)
    policy = _entra_policy((_embedded_cert(raw),))
    data = validate_response(base64.b64encode(raw), policy, XMLSEC, at(now))
    assert data.assertion_id.startswith(assertion_id)
    assert data.name_id_format == "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
    identity = to_identity("entra", data, SamlAttributes())
    assert identity.subject == "SDent1234@student.egcc.edu"
    assert identity.email == "SDent1234@student.egcc.edu"
    assert identity.email_verified
    assert identity.name == "Stu Dent"
    assert identity.attributes["given_name"] == "Stu"
    assert identity.attributes["family_name"] == "Dent"
    assert identity.attributes["upn"] == "SDent1234@student.egcc.edu"
    assert identity.attributes["object_id"] == "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a"
    assert identity.attributes["tenant_id"] == "2f277f1e-e5f1-4f62-b595-79c2d13afda4"
    assert identity.protocol_data["session_index"] == data.assertion_id
    assert identity.username is None


def test_entra_response_against_metadata_whose_key_did_not_sign_it():
    raw = read("entra_saml_response_badgr_1.xml")
    md = parse_idp_metadata(read("entra_tenant_federationmetadata_badgr.xml"))
    assert _embedded_cert(raw) not in md.signing_certs
    with pytest.raises(ProtocolError) as err:
        validate_response(
            base64.b64encode(raw), _entra_policy(md.signing_certs), XMLSEC, at("2021-04-09T12:55Z")
        )
    assert err.value.reason == "signature_invalid"


def test_entra_response_outside_its_window_is_expired():
    raw = read("entra_saml_response_badgr_1.xml")
    with pytest.raises(ProtocolError) as err:
        validate_response(
            base64.b64encode(raw), _entra_policy((_embedded_cert(raw),)), XMLSEC, at("2021-04-10")
        )
    assert err.value.reason == "expired"


def test_entra_response_for_another_sp_is_an_audience_mismatch():
    raw = read("entra_saml_response_badgr_1.xml")
    policy = dataclasses.replace(
        _entra_policy((_embedded_cert(raw),)), sp_entity_id="https://authgate.example/saml"
    )
    with pytest.raises(ProtocolError) as err:
        validate_response(base64.b64encode(raw), policy, XMLSEC, at("2021-04-09T12:55:00Z"))
    assert err.value.reason == "audience_mismatch"


def test_attribute_override_per_connection():
    raw = read("entra_saml_response_badgr_1.xml")
    data = validate_response(
        base64.b64encode(raw),
        _entra_policy((_embedded_cert(raw),)),
        XMLSEC,
        at("2021-04-09T12:55:00Z"),
    )
    mapping = SamlAttributes(
        username="http://schemas.microsoft.com/identity/claims/objectidentifier",
        name="http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
    )
    identity = to_identity("entra", data, mapping)
    assert identity.username == "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a"
    assert identity.name == "Stu"


# --- Okta encrypted assertions --------------------------------------------------------------


def _okta(name: str, **policy: bool) -> tuple[str, AcsPolicy]:
    md = parse_idp_metadata((OKTA / f"{name}_IDPMetadata").read_bytes())
    acs = "http://localhost:8000/saml/acs"
    return (OKTA / f"{name}_response").read_text(), AcsPolicy(
        idp_entity_id=md.entity_id,
        idp_certs=md.signing_certs,
        sp_entity_id="http://localhost:8000/saml/metadata",
        acs_url=acs,
        decryption_keys=(OKTA / "sp_key.pem",),
        **policy,
    )


def test_okta_signed_response_with_encrypted_assertion():
    response, policy = _okta(
        "TestSPCanHandleOktaSignedResponseEncryptedAssertion",
        want_assertions_signed=False,
        want_response_signed=True,
    )
    data = validate_response(response, policy, XMLSEC, at("2020-03-03T19:24:40Z"))
    assert data.issuer == "http://www.okta.com/exkppsa1qwuFV4D7z0h7"
    assert data.name_id == "testuser@testrsc.com"
    assert data.name_id_format == "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
    identity = to_identity("okta", data, SamlAttributes())
    assert identity.email == "testuser@testrsc.com"


def test_okta_assertion_signed_then_encrypted():
    response, policy = _okta("TestSPCanHandleOktaResponseEncryptedSignedAssertion")
    data = validate_response(response, policy, XMLSEC, at("2020-03-03T19:32:00Z"))
    assert data.name_id == "testuser@testrsc.com"
    assert data.attributes


def test_okta_encrypted_assertion_with_the_wrong_sp_key(tmp_path):
    from authgate.keys import generate

    key, _ = generate("not-the-okta-sp", bits=2048)
    (tmp_path / "other.key").write_bytes(key)
    response, policy = _okta("TestSPCanHandleOktaResponseEncryptedSignedAssertion")
    policy = dataclasses.replace(policy, decryption_keys=(tmp_path / "other.key",))
    with pytest.raises(ProtocolError) as err:
        validate_response(response, policy, XMLSEC, at("2020-03-03T19:32:00Z"))
    assert err.value.reason == "decrypt_failed"


def test_okta_encrypted_assertion_without_any_sp_key():
    response, policy = _okta("TestSPCanHandleOktaResponseEncryptedSignedAssertion")
    policy = dataclasses.replace(policy, decryption_keys=())
    with pytest.raises(ProtocolError) as err:
        validate_response(response, policy, XMLSEC, at("2020-03-03T19:32:00Z"))
    assert err.value.reason == "decrypt_failed"


def test_okta_response_signature_required_but_only_the_encrypted_assertion_is_signed():
    response, policy = _okta(
        "TestSPCanHandleOktaResponseEncryptedSignedAssertion", want_response_signed=True
    )
    with pytest.raises(ProtocolError) as err:
        validate_response(response, policy, XMLSEC, at("2020-03-03T19:32:00Z"))
    assert err.value.reason == "signature_invalid"


def test_okta_encrypted_unsigned_assertion_needs_the_response_signature():
    response, policy = _okta("TestSPCanHandleOktaSignedResponseEncryptedAssertion")
    with pytest.raises(ProtocolError) as err:
        validate_response(response, policy, XMLSEC, at("2020-03-03T19:24:40Z"))
    assert err.value.reason == "signature_invalid"
    assert "assertion is not signed" in err.value.detail
