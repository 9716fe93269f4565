"""A tamperable test SAML IdP: builds, signs (signxml) and encrypts (cryptography) responses.

Real IdP documents live in tests/fixtures/idp-samples and an independent IdP
(SimpleSAMLphp) runs in the e2e test; this one exists to build the hostile
messages those never send: unsigned, re-signed by another key, wrapped,
weak algorithms, shifted clocks.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import secrets
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from lxml import etree
from signxml import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
    XMLSigner,
)

from authgate.keys import generate
from tests.servers import require_binary

# Real Entra ID, Okta and Google documents, with their provenance in the README there.
IDP_SAMPLES = Path(__file__).parent / "fixtures" / "idp-samples"

SAMLP_NS = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
MD_NS = "urn:oasis:names:tc:SAML:2.0:metadata"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XENC_NS = "http://www.w3.org/2001/04/xmlenc#"
XS_NS = "http://www.w3.org/2001/XMLSchema"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SAMLP = f"{{{SAMLP_NS}}}"
SAML = f"{{{SAML_NS}}}"
DS = f"{{{DS_NS}}}"
XENC = f"{{{XENC_NS}}}"
NSMAP = {"samlp": SAMLP_NS, "saml": SAML_NS}

SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
SOAP = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP"
SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
AES256_CBC = "http://www.w3.org/2001/04/xmlenc#aes256-cbc"
RSA_OAEP = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
RSA_1_5 = "http://www.w3.org/2001/04/xmlenc#rsa-1_5"


XMLSEC1_TEMPLATE = f"""<xenc:EncryptedData xmlns:xenc="{XENC_NS}" Type="{XENC_NS}Element">
<xenc:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes256-gcm"/>
<ds:KeyInfo xmlns:ds="{DS_NS}"><xenc:EncryptedKey>
<xenc:EncryptionMethod Algorithm="{RSA_OAEP}"/>
<xenc:CipherData><xenc:CipherValue/></xenc:CipherData>
</xenc:EncryptedKey></ds:KeyInfo>
<xenc:CipherData><xenc:CipherValue/></xenc:CipherData>
</xenc:EncryptedData>""".encode()


class LegacySigner(XMLSigner):
    """signxml refuses SHA-1, rightly; the weak_alg tests need such signatures anyway."""

    def check_deprecated_methods(self) -> None:
        return None


@dataclass(frozen=True)
class KeyPair:
    key_pem: bytes
    cert_pem: bytes

    @classmethod
    def create(cls, name: str) -> KeyPair:
        return cls(*generate(name, days=365, bits=2048))

    @property
    def cert_b64(self) -> str:
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def private_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key


def instant(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    return "_" + secrets.token_hex(16)


def sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    node = etree.SubElement(parent, tag, {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        node.text = text
    return node


def encode(root: etree._Element) -> str:
    return base64.b64encode(etree.tostring(root)).decode()


def soap(root: etree._Element) -> bytes:
    """`root` as the one element of a SOAP 1.1 Body."""
    envelope = etree.Element(f"{{{SOAP_ENV_NS}}}Envelope", nsmap={"SOAP-ENV": SOAP_ENV_NS})
    etree.SubElement(envelope, f"{{{SOAP_ENV_NS}}}Body").append(root)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def key_value(keys: KeyPair, private: bool = False) -> etree._Element:
    """A ds:KeyInfo carrying a raw RSA key, with its private exponent when `private`."""
    numbers = keys.private_key().private_numbers()
    parts = [("Modulus", numbers.public_numbers.n), ("Exponent", numbers.public_numbers.e)]
    if private:
        parts.append(("PrivateExponent", numbers.d))
    key_info = etree.Element(DS + "KeyInfo", nsmap={"ds": DS_NS})
    rsa_value = etree.SubElement(etree.SubElement(key_info, DS + "KeyValue"), DS + "RSAKeyValue")
    for tag, number in parts:
        raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
        etree.SubElement(rsa_value, DS + tag).text = base64.b64encode(raw).decode()
    return key_info


def redirect_query(
    kind: str,
    root: etree._Element,
    relay_state: str | None = None,
    keys: KeyPair | None = None,
    sig_alg: str = RSA_SHA256,
) -> str:
    """HTTP-Redirect binding: DEFLATE, base64, and a signature over the encoded query."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = deflater.compress(etree.tostring(root)) + deflater.flush()
    params = [(kind, base64.b64encode(raw).decode())]
    if relay_state is not None:
        params.append(("RelayState", relay_state))
    if keys is None:
        return urlencode(params)
    params.append(("SigAlg", sig_alg))
    signed = urlencode(params).encode()
    digest = hashes.SHA1() if sig_alg == RSA_SHA1 else hashes.SHA256()
    signature = keys.private_key().sign(signed, asym_padding.PKCS1v15(), digest)
    return urlencode([*params, ("Signature", base64.b64encode(signature).decode())])


class TestIdp:
    """One IdP entity with a signing key; every builder returns plain lxml trees to tamper with."""

    __test__ = False

    def __init__(
        self, entity_id: str = "https://idp.example.test/saml", keys: KeyPair | None = None
    ) -> None:
        self.entity_id = entity_id
        self.keys = keys or KeyPair.create("test-idp")
        self.sso_url = "https://idp.example.test/sso"
        self.slo_url = "https://idp.example.test/slo"

    def metadata(
        self,
        *,
        certs: tuple[str, ...] | None = None,
        valid_until: float | None = None,
        sso_binding: str = REDIRECT,
        slo: bool = True,
        artifact_resolution: str | None = None,
    ) -> bytes:
        root = etree.Element(f"{{{MD_NS}}}EntityDescriptor", nsmap={"md": MD_NS, "ds": DS_NS})
        root.set("entityID", self.entity_id)
        if valid_until is not None:
            root.set("validUntil", instant(valid_until))
        role = sub(root, f"{{{MD_NS}}}IDPSSODescriptor", protocolSupportEnumeration=SAMLP_NS)
        for cert in certs or (self.keys.cert_b64,):
            descriptor = sub(role, f"{{{MD_NS}}}KeyDescriptor", use="signing")
            data = sub(sub(descriptor, DS + "KeyInfo"), DS + "X509Data")
            sub(data, DS + "X509Certificate", cert)
        if artifact_resolution is not None:
            sub(
                role,
                f"{{{MD_NS}}}ArtifactResolutionService",
                Binding=SOAP,
                Location=artifact_resolution,
                index="0",
            )
        if slo:
            sub(role, f"{{{MD_NS}}}SingleLogoutService", Binding=REDIRECT, Location=self.slo_url)
        sub(role, f"{{{MD_NS}}}NameIDFormat", EMAIL)
        sub(role, f"{{{MD_NS}}}SingleSignOnService", Binding=sso_binding, Location=self.sso_url)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def assertion(
        self,
        *,
        audience: str | None,
        recipient: str,
        in_response_to: str | None,
        name_id: str = "alice@example.com",
        name_id_format: str | None = EMAIL,
        issuer: str | None = None,
        now: float | None = None,
        not_before: float | None = None,
        not_on_or_after: float | None = None,
        session_not_on_or_after: float | None = None,
        attributes: dict[str, list[str]] | None = None,
        assertion_id: str | None = None,
    ) -> etree._Element:
        now = time.time() if now is None else now
        end = instant(now + 300 if not_on_or_after is None else not_on_or_after)
        root = etree.Element(
            SAML + "Assertion", nsmap={"saml": SAML_NS, "xs": XS_NS, "xsi": XSI_NS}
        )
        root.attrib.update(
            {"ID": assertion_id or new_id(), "Version": "2.0", "IssueInstant": instant(now)}
        )
        sub(root, SAML + "Issuer", issuer or self.entity_id)
        subject = sub(root, SAML + "Subject")
        sub(subject, SAML + "NameID", name_id, Format=name_id_format)
        confirmation = sub(subject, SAML + "SubjectConfirmation", Method=BEARER)
        sub(
            confirmation,
            SAML + "SubjectConfirmationData",
            InResponseTo=in_response_to,
            NotOnOrAfter=end,
            Recipient=recipient,
        )
        start = instant(now - 60 if not_before is None else not_before)
        conditions = sub(root, SAML + "Conditions", NotBefore=start, NotOnOrAfter=end)
        if audience is not None:
            sub(sub(conditions, SAML + "AudienceRestriction"), SAML + "Audience", audience)
        authn = sub(
            root,
            SAML + "AuthnStatement",
            AuthnInstant=instant(now),
            SessionIndex="_session-" + secrets.token_hex(4),
            SessionNotOnOrAfter=None
            if session_not_on_or_after is None
            else instant(session_not_on_or_after),
        )
        context = sub(authn, SAML + "AuthnContext")
        sub(
            context,
            SAML + "AuthnContextClassRef",
            "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport",
        )
        values = (
            {
                "email": ["alice@example.com"],
                "displayName": ["Alice Example"],
                "groups": ["Engineering"],
            }
            if attributes is None
            else attributes
        )
        if values:
            statement = sub(root, SAML + "AttributeStatement")
            for name, items in values.items():
                attribute = sub(statement, SAML + "Attribute", Name=name)
                for item in items:
                    value = sub(attribute, SAML + "AttributeValue", item)
                    value.set(f"{{{XSI_NS}}}type", "xs:string")
        return root

    def response(
        self,
        *content: etree._Element,
        destination: str | None,
        in_response_to: str | None,
        issuer: str | None = None,
        status: str = SUCCESS,
        now: float | None = None,
    ) -> etree._Element:
        now = time.time() if now is None else now
        root = etree.Element(SAMLP + "Response", nsmap=NSMAP)
        root.attrib.update({"ID": new_id(), "Version": "2.0", "IssueInstant": instant(now)})
        if destination is not None:
            root.set("Destination", destination)
        if in_response_to is not None:
            root.set("InResponseTo", in_response_to)
        sub(root, SAML + "Issuer", issuer or self.entity_id)
        sub(sub(root, SAMLP + "Status"), SAMLP + "StatusCode", Value=status)
        for node in content:
            root.append(node)
        return root

    def artifact(self, entity_id: str | None = None, index: int = 0, type_code: int = 4) -> str:
        """A SAMLart (bindings §3.6.4): type code, endpoint index, SHA-1 SourceID, handle."""
        source = hashlib.sha1((entity_id or self.entity_id).encode()).digest()
        raw = type_code.to_bytes(2, "big") + index.to_bytes(2, "big") + source
        return base64.b64encode(raw + secrets.token_bytes(20)).decode()

    def artifact_response(
        self,
        *content: etree._Element,
        in_response_to: str | None,
        issuer: str | None = None,
        status: str = SUCCESS,
    ) -> etree._Element:
        """An (unsigned) ArtifactResponse carrying `content`, the resolved message."""
        root = etree.Element(SAMLP + "ArtifactResponse", nsmap=NSMAP)
        root.attrib.update({"ID": new_id(), "Version": "2.0", "IssueInstant": instant(time.time())})
        if in_response_to is not None:
            root.set("InResponseTo", in_response_to)
        sub(root, SAML + "Issuer", issuer or self.entity_id)
        sub(sub(root, SAMLP + "Status"), SAMLP + "StatusCode", Value=status)
        for node in content:
            root.append(node)
        return root

    def sign(
        self,
        element: etree._Element,
        *,
        keys: KeyPair | None = None,
        signature_alg: str = RSA_SHA256,
        digest: str = "sha256",
    ) -> etree._Element:
        """Enveloped signature right after the Issuer, as real IdPs place it; returns the copy."""
        keys = keys or self.keys
        placeholder = etree.Element(DS + "Signature", nsmap={"ds": DS_NS}, Id="placeholder")
        issuer = element.find(SAML + "Issuer")
        if issuer is None:
            element.insert(0, placeholder)
        else:
            issuer.addnext(placeholder)
        signer_class = LegacySigner if "sha1" in signature_alg or digest == "sha1" else XMLSigner
        signer = signer_class(
            method=SignatureConstructionMethod.enveloped,
            signature_algorithm=SignatureMethod(signature_alg),
            digest_algorithm=DigestAlgorithm("http://www.w3.org/2000/09/xmldsig#sha1")
            if digest == "sha1"
            else DigestAlgorithm.SHA256,
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        )
        return signer.sign(
            element,
            key=keys.key_pem,
            cert=keys.cert_pem,
            reference_uri="#" + element.get("ID"),
            id_attribute="ID",
        )

    def signed_response(self, assertion: etree._Element, **response: Any) -> etree._Element:
        """The usual shape: a signed assertion in an unsigned response."""
        return self.response(self.sign(assertion), **response)

    def encrypt(
        self,
        element: etree._Element,
        sp_cert_pem: bytes,
        key_transport: str = RSA_OAEP,
        holder_tag: str = SAML + "EncryptedAssertion",
    ) -> etree._Element:
        """EncryptedAssertion (or `holder_tag`: EncryptedID, EncryptedAttribute) around
        `element`: AES-256-CBC content, the key wrapped for the SP's certificate."""
        session_key, iv = os.urandom(32), os.urandom(16)
        padder = padding.PKCS7(128).padder()
        plain = padder.update(etree.tostring(element)) + padder.finalize()
        encryptor = Cipher(algorithms.AES(session_key), modes.CBC(iv)).encryptor()
        cipher = iv + encryptor.update(plain) + encryptor.finalize()
        public = x509.load_pem_x509_certificate(sp_cert_pem).public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        if key_transport == RSA_1_5:
            wrapped = public.encrypt(session_key, asym_padding.PKCS1v15())
        else:
            wrapped = public.encrypt(
                session_key,
                asym_padding.OAEP(
                    mgf=asym_padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None
                ),
            )
        holder = etree.Element(holder_tag, nsmap={"saml": SAML_NS})
        data = sub(holder, XENC + "EncryptedData", Type=XENC_NS + "Element")
        sub(data, XENC + "EncryptionMethod", Algorithm=AES256_CBC)
        key_info = sub(data, DS + "KeyInfo")
        encrypted_key = sub(key_info, XENC + "EncryptedKey")
        method = sub(encrypted_key, XENC + "EncryptionMethod", Algorithm=key_transport)
        if key_transport == RSA_OAEP:
            sub(method, DS + "DigestMethod", Algorithm="http://www.w3.org/2000/09/xmldsig#sha1")
        sub(
            sub(encrypted_key, XENC + "CipherData"),
            XENC + "CipherValue",
            base64.b64encode(wrapped).decode(),
        )
        sub(sub(data, XENC + "CipherData"), XENC + "CipherValue", base64.b64encode(cipher).decode())
        return holder

    def encrypt_with_xmlsec1(
        self, element: etree._Element, sp_cert_pem: bytes, holder_tag: str
    ) -> etree._Element:
        """The same holder built by another implementation: the `xmlsec1` command (Debian's
        libxmlsec1), AES-256-GCM content and an RSA-OAEP key, as recent IdPs default to."""
        with tempfile.TemporaryDirectory(prefix="authgate-xmlsec1-") as folder:
            cert, data, template = (Path(folder) / n for n in ("sp.crt", "data.xml", "tmpl.xml"))
            cert.write_bytes(sp_cert_pem)
            data.write_bytes(etree.tostring(element))
            template.write_bytes(XMLSEC1_TEMPLATE)
            out = subprocess.run(
                [require_binary("xmlsec1"), "--encrypt", "--pubkey-cert-pem", str(cert),
                 "--session-key", "aes-256", "--xml-data", str(data), "--node-name",
                 f"{etree.QName(element).namespace}:{etree.QName(element).localname}",
                 str(template)],
                check=True, capture_output=True,
            )  # fmt: skip
        holder = etree.Element(holder_tag, nsmap={"saml": SAML_NS})
        holder.append(etree.fromstring(out.stdout))
        return holder

    def logout_request(
        self,
        name_id: str,
        destination: str | None,
        session_index: str | None = None,
        issuer: str | None = None,
    ) -> etree._Element:
        root = etree.Element(SAMLP + "LogoutRequest", nsmap=NSMAP)
        root.attrib.update({"ID": new_id(), "Version": "2.0", "IssueInstant": instant(time.time())})
        if destination is not None:
            root.set("Destination", destination)
        sub(root, SAML + "Issuer", issuer or self.entity_id)
        sub(root, SAML + "NameID", name_id, Format=EMAIL)
        if session_index is not None:
            sub(root, SAMLP + "SessionIndex", session_index)
        return root

    def logout_response(
        self, in_response_to: str, destination: str, status: str = SUCCESS
    ) -> etree._Element:
        root = etree.Element(SAMLP + "LogoutResponse", nsmap=NSMAP)
        root.attrib.update(
            {
                "ID": new_id(),
                "Version": "2.0",
                "IssueInstant": instant(time.time()),
                "Destination": destination,
                "InResponseTo": in_response_to,
            }
        )
        sub(root, SAML + "Issuer", self.entity_id)
        sub(sub(root, SAMLP + "Status"), SAMLP + "StatusCode", Value=status)
        return root
