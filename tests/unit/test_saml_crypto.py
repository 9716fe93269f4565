"""The in-process verifier and decryptor (`saml_crypto.XmlSec`) alone, below the shape checks.

The ACS tests refuse these messages earlier (shape checks, allowlists); here the
messages reach libxmlsec1 directly, to show that it holds by itself: only the
keys it is given, only same-document references to the signed element itself,
only allowlisted algorithms. Signatures are built by hand (lxml c14n +
cryptography) so that they can carry what no signing library would emit.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from authgate.errors import ProtocolError
from authgate.keys import write_pair
from authgate.protocols import xml_hardening
from authgate.protocols.saml_crypto import (
    CANONICALIZATIONS,
    DIGESTS,
    ENVELOPED,
    EXC_C14N,
    REFERENCE_TRANSFORMS,
    RSA_SHA256,
    SHA256,
    SIGNATURE_HASHES,
    SIGNATURE_TRANSFORMS,
    TRANSFORMS,
    XmlSec,
)
from tests.saml_idp import DS, DS_NS, RSA_SHA1, SAML, XENC, KeyPair, TestIdp, key_value

TRUSTED = KeyPair.create("trusted-idp")
IMPOSTOR = KeyPair.create("impostor")


def _c14n(node: etree._Element) -> bytes:
    return etree.tostring(node, method="c14n", exclusive=True)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _reference(signed_info: etree._Element, uri: str, digest: bytes, enveloped: bool) -> None:
    reference = etree.SubElement(signed_info, DS + "Reference", URI=uri)
    if enveloped:
        transforms = etree.SubElement(reference, DS + "Transforms")
        for algorithm in (ENVELOPED, EXC_C14N):
            etree.SubElement(transforms, DS + "Transform", Algorithm=algorithm)
    etree.SubElement(reference, DS + "DigestMethod", Algorithm=SHA256)
    etree.SubElement(reference, DS + "DigestValue").text = _b64(hashlib.sha256(digest).digest())


def signed_document(
    keys: KeyPair = TRUSTED,
    method: str = RSA_SHA256,
    reference: str = "#_r",
    external: tuple[str, bytes] | None = None,
    key_info: etree._Element | None = None,
) -> etree._Element:
    """`<r ID="_r">` with an enveloped signature, parsed back through the XML gate like input.

    `reference` names what the first Reference signs (`#_r` itself, or `#_s`, a
    sibling); `external` adds a second Reference (URI, the octets it points at).
    """
    root = etree.fromstring(b'<r xmlns="urn:test" ID="_r"><s ID="_s">alice</s></r>')
    target = root if reference == "#_r" else root.find("{urn:test}s")
    digest = _c14n(target)
    signature = etree.Element(DS + "Signature", nsmap={"ds": DS_NS})
    signed_info = etree.SubElement(signature, DS + "SignedInfo")
    etree.SubElement(signed_info, DS + "CanonicalizationMethod", Algorithm=EXC_C14N)
    etree.SubElement(signed_info, DS + "SignatureMethod", Algorithm=method)
    _reference(signed_info, reference, digest, enveloped=reference == "#_r")
    if external is not None:
        _reference(signed_info, external[0], external[1], enveloped=False)
    algorithm = hashes.SHA1() if method == RSA_SHA1 else hashes.SHA256()
    value = keys.private_key().sign(_c14n(signed_info), padding.PKCS1v15(), algorithm)
    etree.SubElement(signature, DS + "SignatureValue").text = _b64(value)
    if key_info is not None:
        signature.append(key_info)
    root.insert(0, signature)
    return xml_hardening.parse(etree.tostring(root))


def signature_of(root: etree._Element) -> etree._Element:
    return root.find(DS + "Signature")


# --- signatures -----------------------------------------------------------------------------


def test_a_well_formed_signature_verifies_with_the_trusted_certificate():
    root = signed_document()
    assert XmlSec().verify(signature_of(root), [IMPOSTOR.cert_b64, TRUSTED.cert_b64])


def test_a_signature_by_another_key_does_not_verify():
    root = signed_document(keys=IMPOSTOR)
    assert not XmlSec().verify(signature_of(root), [TRUSTED.cert_b64])


def test_the_key_a_message_carries_is_never_used():
    """KeyInfo with the impostor's raw key and certificate: neither is ever a verification key."""
    key_info = key_value(IMPOSTOR)
    data = etree.SubElement(key_info, DS + "X509Data")
    etree.SubElement(data, DS + "X509Certificate").text = IMPOSTOR.cert_b64
    root = signed_document(keys=IMPOSTOR, key_info=key_info)
    xmlsec = XmlSec()
    assert not xmlsec.verify(signature_of(root), [TRUSTED.cert_b64])
    assert not xmlsec.verify(signature_of(root), [])


def test_a_reference_to_a_file_never_verifies(tmp_path):
    """A second Reference to a local file with the right digest: xmlsec's I/O is switched off."""
    target = tmp_path / "content.txt"
    target.write_bytes(b"signed octets")
    root = signed_document(external=(target.as_uri(), b"signed octets"))
    assert not XmlSec().verify(signature_of(root), [TRUSTED.cert_b64])


def test_a_reference_to_another_element_never_verifies():
    """Only the signature's parent ID is registered: `#_s` resolves to nothing (wrapping)."""
    root = signed_document(reference="#_s")
    assert not XmlSec().verify(signature_of(root), [TRUSTED.cert_b64])


def test_rsa_sha1_is_not_enabled_in_the_signature_context():
    root = signed_document(method=RSA_SHA1)
    assert not XmlSec().verify(signature_of(root), [TRUSTED.cert_b64])


def test_the_context_enables_exactly_the_allowlisted_algorithms():
    assert {t.href for t in REFERENCE_TRANSFORMS} == TRANSFORMS | DIGESTS
    assert {t.href for t in SIGNATURE_TRANSFORMS} == CANONICALIZATIONS | SIGNATURE_HASHES.keys()


def test_an_unreadable_trusted_certificate_verifies_nothing():
    root = signed_document()
    assert not XmlSec().verify(signature_of(root), ["bm90IGEgY2VydGlmaWNhdGU="])


# --- decryption -----------------------------------------------------------------------------


def sp_key(folder: Path, name: str) -> tuple[Path, bytes]:
    key_file, cert_file = folder / f"{name}.key", folder / f"{name}.crt"
    write_pair(key_file, cert_file, name, bits=2048)
    return key_file, cert_file.read_bytes()


def encrypted(for_cert: bytes, key_info: etree._Element | None = None) -> etree._Element:
    """A Response holding one EncryptedAssertion, parsed back like input."""
    idp = TestIdp(keys=TRUSTED)
    assertion = idp.sign(idp.assertion(audience="sp", recipient="acs", in_response_to=None))
    holder = idp.encrypt(assertion, for_cert)
    if key_info is not None:
        holder.find(f".//{XENC}EncryptedKey").insert(1, key_info)
    root = idp.response(holder, destination="acs", in_response_to=None)
    return xml_hardening.parse(etree.tostring(root)).find(SAML + "EncryptedAssertion")


def test_decryption_with_the_sp_key_yields_the_assertion(tmp_path):
    key_file, cert = sp_key(tmp_path, "sp")
    other_file, _ = sp_key(tmp_path, "other")
    plain = XmlSec().decrypt(encrypted(cert), [other_file, key_file])
    root = xml_hardening.parse(plain)
    holder = root.find(SAML + "EncryptedAssertion")
    assert holder.find(SAML + "Assertion") is not None
    assert root.find(f".//{XENC}EncryptedData") is None


def test_a_private_key_carried_in_the_message_is_never_used(tmp_path):
    """The session key is wrapped for the attacker's key, which the EncryptedKey carries."""
    key_file, _ = sp_key(tmp_path, "sp")
    attacker_file, attacker_cert = sp_key(tmp_path, "attacker")
    attacker = KeyPair(key_pem=attacker_file.read_bytes(), cert_pem=attacker_cert)
    hostile = encrypted(attacker_cert, key_value(attacker, private=True))
    with pytest.raises(ProtocolError) as err:
        XmlSec().decrypt(hostile, [key_file])
    assert err.value.reason == "decrypt_failed"
    control = encrypted(attacker_cert, key_value(attacker, private=True))
    assert XmlSec().decrypt(control, [attacker_file])


def test_an_sp_key_replaced_on_disk_is_read_again(tmp_path):
    key_file, cert = sp_key(tmp_path, "sp")
    new_file, new_cert = sp_key(tmp_path, "new")
    xmlsec = XmlSec()
    assert xmlsec.decrypt(encrypted(cert), [key_file])
    os.replace(new_file, key_file)
    with pytest.raises(ProtocolError) as err:
        xmlsec.decrypt(encrypted(cert), [key_file])
    assert err.value.reason == "decrypt_failed"
    assert xmlsec.decrypt(encrypted(new_cert), [key_file])


@pytest.mark.parametrize("content", [None, b"not a key"])
def test_a_missing_or_unreadable_sp_key_is_decrypt_failed(tmp_path, content):
    _, cert = sp_key(tmp_path, "sp")
    broken = tmp_path / "broken.key"
    if content is not None:
        broken.write_bytes(content)
    with pytest.raises(ProtocolError) as err:
        XmlSec().decrypt(encrypted(cert), [broken])
    assert err.value.reason == "decrypt_failed"
