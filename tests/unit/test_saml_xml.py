"""The XML gate and the signature-shape rules, each refusal with its reason."""

from __future__ import annotations

import copy
import zlib
from urllib.parse import unquote_plus

import pytest
from lxml import etree

from authgate.errors import ProtocolError
from authgate.protocols import xml_hardening
from authgate.protocols.saml_crypto import (
    check_encryption_shape,
    check_signature_shape,
    verify_query_signature,
)
from authgate.protocols.saml_xml import parse_instant, text
from tests.saml_idp import DS, RSA_1_5, RSA_SHA1, KeyPair, TestIdp, redirect_query


def refused(reason: str, func, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        func(*args)
    assert err.value.reason == reason, err.value
    return err.value


# --- the parser gate ----------------------------------------------------------------------


def test_doctype_alone_is_refused():
    refused("invalid_request", xml_hardening.parse, b"<!DOCTYPE r><r/>")


def test_external_dtd_is_never_opened(tmp_path):
    secret = tmp_path / "secret.dtd"
    secret.write_text('<!ENTITY leak "x">')
    err = refused(
        "invalid_request", xml_hardening.parse, f'<!DOCTYPE r SYSTEM "{secret}"><r/>'.encode()
    )
    assert "DOCTYPE" in err.detail


def test_external_entity_is_refused():
    xml = b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    refused("invalid_request", xml_hardening.parse, xml)


def test_billion_laughs_is_refused():
    entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    xml = f'<!DOCTYPE r [<!ENTITY l0 "lol">{entities}]><r>&l9;</r>'.encode()
    refused("invalid_request", xml_hardening.parse, xml)


def test_undefined_entity_is_refused():
    refused("invalid_request", xml_hardening.parse, b"<r>&nbsp;</r>")


def test_size_limit_before_parsing():
    refused("invalid_request", xml_hardening.parse, b"<r>" + b"a" * 5000 + b"</r>", 4096)


def test_base64_is_strict_and_bounded():
    refused("invalid_request", xml_hardening.b64decode, "not base64!", 4096)
    refused("invalid_request", xml_hardening.b64decode, "A" * 10000, 4096)
    assert xml_hardening.b64decode("PHIv\nPg==", 4096) == b"<r/>"


def test_inflate_is_capped():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = bomb.compress(b"<r>" + b"a" * 10_000_000 + b"</r>") + bomb.flush()
    assert len(data) < 20_000
    refused("invalid_request", xml_hardening.inflate, data, 65536)


def test_inflate_of_junk():
    refused("invalid_request", xml_hardening.inflate, b"\xff\x00junk", 65536)


def test_utf8_bom_and_declared_encodings_are_read():
    assert xml_hardening.parse(b"\xef\xbb\xbf<r/>").tag == "r"
    utf16 = '<?xml version="1.0" encoding="UTF-16"?><r>é</r>'.encode("utf-16")
    assert xml_hardening.parse(utf16).text == "é"


# --- reading values -----------------------------------------------------------------------


def test_text_is_never_truncated_by_a_comment():
    node = etree.fromstring(b"<NameID>alice@example.com<!---->.evil.test</NameID>")
    assert node.text == "alice@example.com"  # what a naive reader would take
    assert text(node) == "alice@example.com.evil.test"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-04-09T12:53:30Z", 1617972810.0),
        ("2021-04-09T12:53:30.562Z", 1617972810.562),
        ("2021-04-09T12:53:30.1234567Z", 1617972810.123456),
        ("2021-04-09T14:53:30+02:00", 1617972810.0),
        ("2021-04-09T12:53:30", 1617972810.0),
    ],
)
def test_instants(value, expected):
    assert parse_instant(value, "t") == pytest.approx(expected)


def test_malformed_instant():
    refused("invalid_request", parse_instant, "yesterday", "NotOnOrAfter")


# --- signature shape (SAML core 5.4): each rule on its own --------------------------------


@pytest.fixture(scope="module")
def idp() -> TestIdp:
    return TestIdp(keys=KeyPair.create("shape-idp"))


def signed_assertion(idp: TestIdp) -> etree._Element:
    return idp.sign(idp.assertion(audience="sp", recipient="acs", in_response_to=None))


def test_a_well_formed_signature_passes(idp):
    node = signed_assertion(idp)
    check_signature_shape(node.find(DS + "Signature"), node)


def test_reference_to_another_element(idp):
    node = signed_assertion(idp)
    node.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference").set("URI", "#elsewhere")
    refused("signature_invalid", check_signature_shape, node.find(DS + "Signature"), node)


def test_two_references(idp):
    node = signed_assertion(idp)
    info = node.find(f"{DS}Signature/{DS}SignedInfo")
    info.append(copy.deepcopy(info.find(DS + "Reference")))
    refused("signature_invalid", check_signature_shape, node.find(DS + "Signature"), node)


def test_xpath_transform(idp):
    node = signed_assertion(idp)
    transform = next(node.iter(DS + "Transform"))
    transform.set("Algorithm", "http://www.w3.org/TR/1999/REC-xpath-19991116")
    err = refused("signature_invalid", check_signature_shape, node.find(DS + "Signature"), node)
    assert "transform" in err.detail


def test_xslt_transform_with_parameters(idp):
    node = signed_assertion(idp)
    transform = list(node.iter(DS + "Transform"))[-1]
    transform.set("Algorithm", "http://www.w3.org/TR/1999/REC-xslt-19991116")
    etree.SubElement(transform, "{http://www.w3.org/1999/XSL/Transform}stylesheet")
    refused("signature_invalid", check_signature_shape, node.find(DS + "Signature"), node)


def test_missing_enveloped_transform(idp):
    node = signed_assertion(idp)
    enveloped = next(node.iter(DS + "Transform"))
    enveloped.getparent().remove(enveloped)
    refused("signature_invalid", check_signature_shape, node.find(DS + "Signature"), node)


def test_object_inside_the_signature(idp):
    node = signed_assertion(idp)
    etree.SubElement(node.find(DS + "Signature"), DS + "Object")
    refused("signature_invalid", check_signature_shape, node.find(DS + "Signature"), node)


def test_signature_not_right_after_the_issuer(idp):
    node = signed_assertion(idp)
    signature = node.find(DS + "Signature")
    node.append(signature)
    refused("signature_invalid", check_signature_shape, signature, node)


def test_signature_of_a_child_element(idp):
    node = signed_assertion(idp)
    refused("signature_invalid", check_signature_shape, node.find(DS + "Signature"), node[2])


def test_unknown_canonicalization(idp):
    node = signed_assertion(idp)
    next(node.iter(DS + "CanonicalizationMethod")).set("Algorithm", "urn:x-c14n")
    refused("signature_invalid", check_signature_shape, node.find(DS + "Signature"), node)


def test_hmac_and_md5_are_weak(idp):
    for algorithm in (
        "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
        "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-md5",
    ):
        node = signed_assertion(idp)
        next(node.iter(DS + "SignatureMethod")).set("Algorithm", algorithm)
        refused("weak_alg", check_signature_shape, node.find(DS + "Signature"), node)


# --- encryption shape ---------------------------------------------------------------------


def encrypted(idp: TestIdp, transport: str | None = None) -> etree._Element:
    sp = KeyPair.create("shape-sp")
    node = idp.assertion(audience="sp", recipient="acs", in_response_to=None)
    return idp.encrypt(node, sp.cert_pem, *(transport,) if transport else ())


def test_encryption_shape_accepts_oaep_and_aes(idp):
    check_encryption_shape(encrypted(idp))


def test_rsa_1_5_is_weak(idp):
    refused("weak_alg", check_encryption_shape, encrypted(idp, RSA_1_5))


def test_triple_des_is_weak(idp):
    holder = encrypted(idp)
    method = holder.find(".//{http://www.w3.org/2001/04/xmlenc#}EncryptionMethod")
    method.set("Algorithm", "http://www.w3.org/2001/04/xmlenc#tripledes-cbc")
    refused("weak_alg", check_encryption_shape, holder)


def test_remote_key_retrieval_is_refused(idp):
    holder = encrypted(idp)
    key_info = holder.find(f".//{DS}KeyInfo")
    etree.SubElement(key_info, DS + "RetrievalMethod", URI="http://evil.test/key")
    refused("decrypt_failed", check_encryption_shape, holder)


def test_cipher_reference_is_refused(idp):
    holder = encrypted(idp)
    data = holder.find(".//{http://www.w3.org/2001/04/xmlenc#}CipherData")
    etree.SubElement(data, "{http://www.w3.org/2001/04/xmlenc#}CipherReference", URI="file:///x")
    refused("decrypt_failed", check_encryption_shape, holder)


# --- HTTP-Redirect signatures -------------------------------------------------------------


def _signed_octets(query: str) -> tuple[bytes, str, str]:
    parts = dict(p.split("=", 1) for p in query.split("&"))
    octets = "&".join(
        f"{k}={parts[k]}" for k in ("SAMLRequest", "RelayState", "SigAlg") if k in parts
    )
    return octets.encode(), unquote_plus(parts["SigAlg"]), unquote_plus(parts["Signature"])


def test_query_signature_with_trusted_and_untrusted_keys(idp):
    root = etree.fromstring(b"<r/>")
    octets, alg, signature = _signed_octets(redirect_query("SAMLRequest", root, "/x", idp.keys))
    assert verify_query_signature(octets, alg, signature, [idp.keys.cert_b64])
    other = KeyPair.create("other")
    assert not verify_query_signature(octets, alg, signature, [other.cert_b64])
    assert not verify_query_signature(octets + b"x", alg, signature, [idp.keys.cert_b64])


def test_query_signature_with_sha1_is_weak(idp):
    root = etree.fromstring(b"<r/>")
    query = redirect_query("SAMLRequest", root, None, idp.keys, RSA_SHA1)
    octets, alg, signature = _signed_octets(query)
    refused("weak_alg", verify_query_signature, octets, alg, signature, [idp.keys.cert_b64])
