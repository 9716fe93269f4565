"""The development IdP's SAML side (pysaml2's own IdP) against authgate's real SP code.

Requests are made by authgate's pysaml2 SP configuration; every answer is
checked by authgate's own validators. Hostile requests (unsigned, tampered,
signed by a stranger, from an unknown SP, to an ACS outside the metadata)
are refused with the exact message.
"""

from __future__ import annotations

import base64
import time
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID

from authgate.devidp.saml import (
    AES256_GCM,
    RSA_SHA256,
    SHA256,
    SamlIdp,
    SamlRequestError,
    SpMetadataError,
    SpOptions,
)
from authgate.devidp.users import DevUser, find
from authgate.errors import ProtocolError
from authgate.keys import write_pair
from authgate.protocols.saml_attributes import to_identity
from authgate.protocols.saml_config import SpEndpoints, client, sp_config, sp_metadata
from authgate.protocols.saml_crypto import XmlSec, verify_query_signature
from authgate.protocols.saml_logout import redirect_message
from authgate.protocols.saml_metadata import IdpMetadata, parse_idp_metadata
from authgate.protocols.saml_validate import AcsPolicy, validate_response
from authgate.settings import SamlAttributes, SamlConnection, parse_settings
from tests.servers import require_binary

IDP_BASE = "http://127.0.0.1:4181"


def _user(email: str) -> DevUser:
    user = find(email)
    assert user is not None
    return user


ALICE, CAROL = _user("alice@example.com"), _user("carol@partner.example")
DS = "{http://www.w3.org/2000/09/xmldsig#}"


class Sp:
    """One authgate SAML connection's SP, as the demo configures it."""

    def __init__(
        self,
        tmp: Path,
        conn_id: str,
        public_url: str = "http://127.0.0.1:4180",
        idp_base: str = IDP_BASE,
        use: str = "both",
    ):
        self.idp_base = idp_base
        key, cert = tmp / f"{conn_id}.key", tmp / f"{conn_id}.crt"
        write_pair(key, cert, conn_id, bits=2048)
        self.key = key
        settings = parse_settings(
            {
                "public_url": public_url,
                "upstream": {"url": "http://127.0.0.1:9"},
                "connections": [
                    {
                        "id": conn_id,
                        "name": conn_id,
                        "type": "saml",
                        "idp_metadata_url": idp_base + "/saml/metadata",
                        "sp_keys": [{"key_file": str(key), "cert_file": str(cert), "use": use}],
                        "sign_requests": True,
                        "name_id_format": "persistent",
                    }
                ],
            }
        )
        conn = settings.connections[0]
        assert isinstance(conn, SamlConnection)
        self.endpoints = SpEndpoints.build(conn, settings)
        config = sp_config(conn, self.endpoints)
        self.metadata = sp_metadata(config)
        self.client: Saml2Client = client(config)

    def authn_request(self, acs_url: str | None = None, sign: bool = False) -> str:
        _, request = self.client.create_authn_request(
            self.idp_base + "/saml/sso",
            binding=BINDING_HTTP_POST,
            nameid_format=NAMEID_FORMAT_PERSISTENT,
            assertion_consumer_service_url=acs_url,
            sign=sign,
            sign_alg=RSA_SHA256,
            digest_alg=SHA256,
        )
        return str(request)

    def redirect(self, xml: str, kind: str = "SAMLRequest", relay: str = "/r") -> dict[str, str]:
        info = self.client.apply_binding(
            BINDING_HTTP_REDIRECT,
            xml,
            self.idp_base + "/saml/sso",
            relay_state=relay,
            sign=True,
            sigalg=RSA_SHA256,
            response=kind == "SAMLResponse",
        )
        location = dict(info["headers"])["Location"]
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_binary("xmlsec1")
    yield tmp_path_factory.mktemp("devidp-saml")


@pytest.fixture(scope="module")
def sp(keys: Path) -> Sp:
    return Sp(keys, "dev-saml")


@pytest.fixture(scope="module")
def stranger(keys: Path) -> Sp:
    """An SP the IdP was never told about."""
    return Sp(keys, "stranger", "http://127.0.0.1:5999")


@pytest.fixture(scope="module")
def idp(keys: Path, sp: Sp) -> SamlIdp:
    return SamlIdp(IDP_BASE, keys, [sp.metadata])


@pytest.fixture(scope="module")
def lenient_idp(keys: Path, sp: Sp) -> SamlIdp:
    """Signatures not required: shows the SP and ACS checks stand on their own."""
    return SamlIdp(IDP_BASE, keys, [sp.metadata], require_signed_requests=False)


@pytest.fixture(scope="module")
def idp_metadata(idp: SamlIdp) -> IdpMetadata:
    return parse_idp_metadata(idp.metadata())


def acs_policy(sp: Sp, meta: IdpMetadata) -> AcsPolicy:
    return AcsPolicy(
        idp_entity_id=meta.entity_id,
        idp_certs=meta.signing_certs,
        sp_entity_id=sp.endpoints.entity_id,
        acs_url=sp.endpoints.acs_url,
    )


def test_the_metadata_offers_both_bindings_and_wants_signed_requests(idp: SamlIdp):
    root = etree.fromstring(idp.metadata())
    md = "{urn:oasis:names:tc:SAML:2.0:metadata}"
    role = root.find(f"{md}IDPSSODescriptor")
    assert role is not None
    assert role.get("WantAuthnRequestsSigned") == "true"
    sso = {e.get("Binding") for e in role.iter(f"{md}SingleSignOnService")}
    slo = {e.get("Binding") for e in role.iter(f"{md}SingleLogoutService")}
    assert sso == slo == {BINDING_HTTP_REDIRECT, BINDING_HTTP_POST}
    assert [e.text for e in role.iter(f"{md}NameIDFormat")] == [NAMEID_FORMAT_PERSISTENT]


@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_a_signed_request_gets_a_response_authgate_accepts(
    idp: SamlIdp, sp: Sp, idp_metadata: IdpMetadata, binding: str
):
    if binding == "redirect":
        params = sp.redirect(sp.authn_request())
    else:
        params = {
            "SAMLRequest": base64.b64encode(sp.authn_request(sign=True).encode()).decode(),
            "RelayState": "/r",
        }
    login = idp.parse_login(binding, params["SAMLRequest"], params)
    assert (login.sp_entity_id, login.acs_url, login.relay_state) == (
        sp.endpoints.entity_id,
        sp.endpoints.acs_url,
        "/r",
    )
    form = idp.login_response(login, ALICE)
    assert form.url == sp.endpoints.acs_url
    assert form.fields["RelayState"] == "/r"
    data = validate_response(
        form.fields["SAMLResponse"], acs_policy(sp, idp_metadata), XmlSec(), time.time()
    )
    assert (data.in_response_to, data.name_id) == (login.request_id, ALICE.id)
    identity = to_identity("dev-saml", data, SamlAttributes())
    assert (identity.email, identity.name, identity.groups) == (
        ALICE.email,
        ALICE.name,
        ("admins", "engineering"),
    )


def test_response_and_assertion_are_both_signed_with_sha256(idp: SamlIdp, sp: Sp) -> None:
    params = sp.redirect(sp.authn_request())
    form = idp.login_response(idp.parse_login("redirect", params["SAMLRequest"], params), ALICE)
    root = etree.fromstring(base64.b64decode(form.fields["SAMLResponse"]))
    signatures = list(root.iter(f"{DS}Signature"))
    parents = sorted(etree.QName(s.getparent()).localname for s in signatures)
    assert parents == ["Assertion", "Response"]
    methods = {m.get("Algorithm") for m in root.iter(f"{DS}SignatureMethod")}
    digests = {m.get("Algorithm") for m in root.iter(f"{DS}DigestMethod")}
    assert (methods, digests) == ({RSA_SHA256}, {SHA256})


def test_an_unverified_address_is_not_asserted(idp: SamlIdp, sp: Sp, idp_metadata: IdpMetadata):
    params = sp.redirect(sp.authn_request())
    form = idp.login_response(idp.parse_login("redirect", params["SAMLRequest"], params), CAROL)
    data = validate_response(
        form.fields["SAMLResponse"], acs_policy(sp, idp_metadata), XmlSec(), time.time()
    )
    identity = to_identity("dev-saml", data, SamlAttributes())
    assert (identity.email, identity.email_verified, identity.name) == (None, False, CAROL.name)


def test_cancelling_gives_a_signed_failure_authgate_reports_as_idp_error(
    idp: SamlIdp, sp: Sp, idp_metadata: IdpMetadata
):
    params = sp.redirect(sp.authn_request())
    form = idp.cancelled_response(idp.parse_login("redirect", params["SAMLRequest"], params))
    with pytest.raises(ProtocolError) as refused:
        validate_response(
            form.fields["SAMLResponse"], acs_policy(sp, idp_metadata), XmlSec(), time.time()
        )
    assert refused.value.reason == "idp_error"


def _tamper(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[10] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _unsigned_redirect(xml: str) -> dict[str, str]:
    deflated = zlib.compress(xml.encode())[2:-4]
    return {"SAMLRequest": base64.b64encode(deflated).decode(), "RelayState": "/r"}


def _hostile(sp: Sp, stranger: Sp, case: str) -> tuple[str, dict[str, str]]:
    if case == "unsigned redirect":
        return "redirect", _unsigned_redirect(sp.authn_request())
    if case == "tampered signature":
        params = sp.redirect(sp.authn_request())
        return "redirect", {**params, "Signature": _tamper(params["Signature"])}
    if case == "relay state changed after signing":
        return "redirect", {**sp.redirect(sp.authn_request()), "RelayState": "/elsewhere"}
    if case == "signed by a stranger's key":
        params = stranger.redirect(sp.authn_request())
        return "redirect", params
    if case == "unsigned post":
        return "post", {"SAMLRequest": base64.b64encode(sp.authn_request().encode()).decode()}
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "unsigned redirect",
        "tampered signature",
        "relay state changed after signing",
        "signed by a stranger's key",
        "unsigned post",
    ],
)
def test_requests_without_a_good_signature_are_refused(
    idp: SamlIdp, sp: Sp, stranger: Sp, case: str
):
    binding, params = _hostile(sp, stranger, case)
    with pytest.raises(SamlRequestError) as refused:
        idp.parse_login(binding, params["SAMLRequest"], params)
    assert str(refused.value).startswith("the AuthnRequest was refused:")


def test_an_unknown_service_provider_is_refused(lenient_idp: SamlIdp, stranger: Sp):
    params = _unsigned_redirect(stranger.authn_request())
    with pytest.raises(SamlRequestError) as refused:
        lenient_idp.parse_login("redirect", params["SAMLRequest"], params)
    assert "unknown service provider 'http://127.0.0.1:5999/_authgate/saml/stranger'" in str(
        refused.value
    )


@pytest.mark.parametrize(
    "acs",
    [
        "https://evil.example/acs",
        "http://127.0.0.1:4180/_authgate/saml/dev-saml/acs/../../other/acs",
        "http://127.0.0.1:4180/_authgate/saml/dev-saml/acs?x=1",
    ],
)
def test_an_acs_url_outside_the_metadata_is_refused(lenient_idp: SamlIdp, sp: Sp, acs: str):
    params = _unsigned_redirect(sp.authn_request(acs_url=acs))
    with pytest.raises(SamlRequestError) as refused:
        lenient_idp.parse_login("redirect", params["SAMLRequest"], params)
    assert str(refused.value).startswith("no ACS in the SP metadata matches this request")


@pytest.mark.parametrize("garbage", ["", "bm90IHhtbA==", "%%%", "PHg+PC94Pg=="])
def test_garbage_is_refused(idp: SamlIdp, garbage: str):
    with pytest.raises(SamlRequestError):
        idp.parse_login("post", garbage, {})


def _logout_request(sp: Sp, sign_xml: bool = False) -> str:
    _, request = sp.client.create_logout_request(
        IDP_BASE + "/saml/slo",
        "http://127.0.0.1:4181/saml/metadata",
        name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=ALICE.id),
        sign=sign_xml,
        sign_alg=RSA_SHA256,
        digest_alg=SHA256,
    )
    return str(request)


def test_single_logout_answers_with_a_signed_redirect_authgate_verifies(
    idp: SamlIdp, sp: Sp, idp_metadata: IdpMetadata
):
    params = sp.redirect(_logout_request(sp), relay="")
    logout = idp.parse_logout("redirect", params["SAMLRequest"], params)
    assert (logout.sp_entity_id, logout.name_id) == (sp.endpoints.entity_id, ALICE.id)
    reply = urlsplit(logout.reply["url"])
    assert f"{reply.scheme}://{reply.netloc}{reply.path}" == sp.endpoints.slo_url
    message = redirect_message(reply.query, "SAMLResponse")
    assert message.sig_alg == RSA_SHA256
    assert message.signature is not None
    assert verify_query_signature(
        message.signed_octets, message.sig_alg, message.signature, idp_metadata.signing_certs
    )


def test_single_logout_by_post_answers_with_a_signed_post(idp: SamlIdp, sp: Sp):
    xml = _logout_request(sp, sign_xml=True)
    params = {"SAMLRequest": base64.b64encode(xml.encode()).decode()}
    logout = idp.parse_logout("post", params["SAMLRequest"], params)
    assert logout.reply["url"] == sp.endpoints.slo_url
    answer = etree.fromstring(base64.b64decode(logout.reply["fields"]["SAMLResponse"]))
    assert etree.QName(answer).localname == "LogoutResponse"
    assert answer.find(f"{DS}Signature") is not None


@pytest.mark.parametrize("case", ["unsigned", "tampered"])
def test_a_logout_request_without_a_good_signature_is_refused(idp: SamlIdp, sp: Sp, case: str):
    params: dict[str, Any] = (
        _unsigned_redirect(_logout_request(sp))
        if case == "unsigned"
        else sp.redirect(_logout_request(sp), relay="")
    )
    if case == "tampered":
        params["Signature"] = _tamper(params["Signature"])
    with pytest.raises(SamlRequestError) as refused:
        idp.parse_logout("redirect", params["SAMLRequest"], params)
    assert str(refused.value).startswith("the LogoutRequest was refused:")


XENC = "{http://www.w3.org/2001/04/xmlenc#}"
NS = {"saml": "urn:oasis:names:tc:SAML:2.0:assertion"}


@pytest.mark.parametrize(
    ("options", "held"),
    [
        (SpOptions(encrypt_assertion=True), "EncryptedAssertion"),
        (SpOptions(encrypt_name_id=True), "Assertion/saml:Subject/saml:EncryptedID"),
        (SpOptions(encrypt_assertion=True, encrypt_name_id=True), "EncryptedAssertion"),
    ],
)
def test_an_sp_that_asks_gets_encrypted_content_authgate_decrypts(
    keys: Path, sp: Sp, options: SpOptions, held: str
):
    """AES-256-GCM under RSA-OAEP to the SP metadata's certificate; still signed within."""
    idp = SamlIdp(IDP_BASE, keys, [sp.metadata], sp_options={sp.endpoints.entity_id: options})
    params = sp.redirect(sp.authn_request())
    login = idp.parse_login("redirect", params["SAMLRequest"], params)
    form = idp.login_response(login, ALICE)
    root = etree.fromstring(base64.b64decode(form.fields["SAMLResponse"]))
    assert len(root.xpath(f"saml:{held}", namespaces=NS)) == 1
    assert root.xpath("//saml:NameID", namespaces=NS) == []
    methods = {m.get("Algorithm") for m in root.iter(f"{XENC}EncryptionMethod")}
    assert methods == {AES256_GCM, "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"}
    policy = acs_policy(sp, parse_idp_metadata(idp.metadata()))
    policy = replace(policy, decryption_keys=(sp.key,))
    data = validate_response(form.fields["SAMLResponse"], policy, XmlSec(), time.time())
    assert (data.in_response_to, data.name_id) == (login.request_id, ALICE.id)
    assert form.session is not None
    assert data.session_index == form.session.session_index


def test_encryption_to_an_sp_without_an_encryption_certificate_is_refused(keys: Path):
    signing_only = Sp(keys, "signing-only", use="signing")
    with pytest.raises(SpMetadataError) as refused:
        SamlIdp(
            IDP_BASE,
            keys,
            [signing_only.metadata],
            sp_options={signing_only.endpoints.entity_id: SpOptions(encrypt_assertion=True)},
        )
    assert str(refused.value) == (
        "The SP metadata has no encryption certificate, so this IdP cannot encrypt to it."
    )
