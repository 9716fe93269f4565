"""XML signature and encryption for SAML: algorithm allowlists, signature shape, xmlsec1.

Cryptography is delegated to the `xmlsec1` program through pysaml2's backend,
which is always given the trusted IdP certificates and never the key a
message carries. Before xmlsec1 runs, the shape of every signature is
checked here, because xmlsec1 verifies whatever it is pointed at: one
enveloped signature, one Reference to its parent's ID, only allowlisted
transforms and algorithms, no ds:Object or ds:Manifest. All functions here
block (they run a subprocess) and are called from an executor.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree
from saml2.sigver import CryptoBackendXmlSec1, SigverError, get_xmlsec_binary

from authgate.errors import ProtocolError
from authgate.protocols.saml_xml import DS, SAML, XENC, child, children, previous_element

ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
CANONICALIZATIONS = frozenset(
    {
        EXC_C14N,
        "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
        "http://www.w3.org/2006/12/xml-c14n11",
    }
)
TRANSFORMS = CANONICALIZATIONS | {ENVELOPED}
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SIGNATURE_HASHES: dict[str, hashes.HashAlgorithm] = {
    RSA_SHA256: hashes.SHA256(),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": hashes.SHA384(),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512(),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": hashes.SHA256(),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": hashes.SHA384(),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": hashes.SHA512(),
}
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
DIGESTS = frozenset(
    {
        SHA256,
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
        "http://www.w3.org/2001/04/xmlenc#sha512",
    }
)
DATA_ENCRYPTION = frozenset(
    {
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
        "http://www.w3.org/2001/04/xmlenc#aes192-cbc",
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
        "http://www.w3.org/2009/xmlenc11#aes128-gcm",
        "http://www.w3.org/2009/xmlenc11#aes192-gcm",
        "http://www.w3.org/2009/xmlenc11#aes256-gcm",
    }
)
KEY_TRANSPORT = frozenset(
    {"http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p", "http://www.w3.org/2009/xmlenc11#rsa-oaep"}
)


def _weak(kind: str, algorithm: str | None) -> ProtocolError:
    sha1 = bool(algorithm and "sha1" in algorithm)
    hint = " (SHA-1 is refused: set the IdP to SHA-256)" if sha1 else ""
    return ProtocolError("weak_alg", f"{kind} algorithm {algorithm!r} is not accepted{hint}")


def _bad(detail: str) -> ProtocolError:
    return ProtocolError("signature_invalid", detail)


def _one(parent: etree._Element, tag: str, what: str) -> etree._Element:
    found = children(parent, tag)
    if len(found) != 1:
        raise _bad(f"{what}: expected exactly one {etree.QName(tag).localname}")
    return found[0]


def check_signature_shape(
    signature: etree._Element, parent: etree._Element, after: str | None = SAML + "Issuer"
) -> None:
    """Refuse any signature that is not SAML's enveloped profile (SAML core 5.4) over `parent`.

    It must be a direct child of the signed element, right after its Issuer
    (`after`; first child for metadata) because xmlsec1 checks the first
    ds:Signature it meets below the element it is pointed at, so position
    decides which signature is checked; with one Reference to the parent's
    ID and nothing that could carry unsigned content.
    """
    what = f"signature of {etree.QName(parent).localname}"
    if signature.getparent() is not parent:
        raise _bad(f"{what}: not a direct child of the signed element")
    before = previous_element(signature)
    if (before.tag if before is not None else None) != after:
        place = f"directly follow the {etree.QName(after).localname}" if after else "come first"
        raise _bad(f"{what}: must {place}")
    if any(signature.find(f".//{DS}{name}") is not None for name in ("Object", "Manifest")):
        raise _bad(f"{what}: ds:Object and ds:Manifest are not accepted")
    signed_info = _one(signature, DS + "SignedInfo", what)
    c14n = _one(signed_info, DS + "CanonicalizationMethod", what).get("Algorithm")
    if c14n not in CANONICALIZATIONS:
        raise _bad(f"{what}: canonicalization {c14n!r} is not accepted")
    method = _one(signed_info, DS + "SignatureMethod", what).get("Algorithm")
    if method not in SIGNATURE_HASHES:
        raise _weak("signature", method)
    reference = _one(signed_info, DS + "Reference", what)
    node_id = parent.get("ID")
    if not node_id or reference.get("URI") != "#" + node_id:
        raise _bad(f"{what}: the Reference must point at the signed element's own ID")
    digest = _one(reference, DS + "DigestMethod", what).get("Algorithm")
    if digest not in DIGESTS:
        raise _weak("digest", digest)
    _check_transforms(reference, what)
    _one(signature, DS + "SignatureValue", what)


def _check_transforms(reference: etree._Element, what: str) -> None:
    container = _one(reference, DS + "Transforms", what)
    transforms = children(container)
    algorithms = [t.get("Algorithm") for t in transforms]
    if any(t.tag != DS + "Transform" for t in transforms) or not 1 <= len(algorithms) <= 2:
        raise _bad(f"{what}: expected the enveloped-signature transform and one canonicalization")
    if ENVELOPED not in algorithms:
        raise _bad(f"{what}: the enveloped-signature transform is missing")
    for algorithm, transform in zip(algorithms, transforms, strict=True):
        if algorithm not in TRANSFORMS:
            raise _bad(f"{what}: transform {algorithm!r} is not accepted")
        for param in children(transform):
            if etree.QName(param).localname != "InclusiveNamespaces":
                raise _bad(f"{what}: transform parameters are not accepted")


def check_encryption_shape(encrypted: etree._Element) -> None:
    """One EncryptedData with allowlisted algorithms; key references stay inside the message."""
    data = children(encrypted, XENC + "EncryptedData")
    if len(data) != 1 or encrypted.find(f".//{XENC}CipherReference") is not None:
        raise ProtocolError("decrypt_failed", "expected one EncryptedData with an inline value")
    if len(encrypted.findall(f".//{XENC}EncryptedData")) != 1:
        raise ProtocolError("decrypt_failed", "nested encrypted data is not accepted")
    method = child(data[0], XENC + "EncryptionMethod")
    algorithm = method.get("Algorithm") if method is not None else None
    if algorithm not in DATA_ENCRYPTION:
        raise _weak("data encryption", algorithm)
    keys = encrypted.findall(f".//{XENC}EncryptedKey")
    if not keys:
        raise ProtocolError("decrypt_failed", "the encrypted assertion carries no EncryptedKey")
    for key in keys:
        key_method = child(key, XENC + "EncryptionMethod")
        key_alg = key_method.get("Algorithm") if key_method is not None else None
        if key_alg not in KEY_TRANSPORT:
            raise _weak("key transport", key_alg)
    for node in encrypted.iter(DS + "RetrievalMethod"):
        if not (node.get("URI") or "").startswith("#"):
            raise ProtocolError("decrypt_failed", "a RetrievalMethod points outside the message")


def pem(cert_b64: str) -> str:
    body = "\n".join(cert_b64[i : i + 64] for i in range(0, len(cert_b64), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def public_key(cert_b64: str) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None:
    try:
        key = x509.load_der_x509_certificate(base64.b64decode(cert_b64)).public_key()
    except (ValueError, binascii.Error):
        return None
    return key if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else None


def describe(cert_b64: str) -> str:
    """Subject and validity of a certificate, for operators comparing it with the IdP's."""
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64))
    except (ValueError, binascii.Error):
        return "unreadable certificate"
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    expired = " (expired)" if cert.not_valid_after_utc < dt.datetime.now(dt.UTC) else ""
    return f"{cert.subject.rfc4514_string()}, valid until {until}{expired}"


def embedded_certificate(signature: etree._Element) -> str | None:
    """The certificate a signature carries: only a hint for trying trusted keys in order."""
    node = signature.find(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")
    return "".join((node.text or "").split()) if node is not None else None


def ordered(certs: Sequence[str], hint: str | None) -> list[str]:
    """Trusted certificates, the one the message names first (saves xmlsec1 runs on rollover)."""
    return sorted(certs, key=lambda c: c != hint)


@contextmanager
def _temp_file(content: bytes, suffix: str) -> Iterator[str]:
    with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
        handle.write(content)
        handle.flush()
        yield handle.name


class XmlSec:
    """pysaml2's xmlsec1 backend, created on first use (it runs `xmlsec1 --version`)."""

    def __init__(self) -> None:
        self._backend: CryptoBackendXmlSec1 | None = None
        self._lock = threading.Lock()

    @property
    def binary(self) -> str:
        return get_xmlsec_binary()

    def _get(self) -> CryptoBackendXmlSec1:
        with self._lock:
            if self._backend is None:
                # pysaml2 logs xmlsec1's full output at ERROR for every key that does not
                # match (normal during rollover); authgate reports the outcome itself.
                logging.getLogger("saml2.sigver").setLevel(logging.CRITICAL)
                self._backend = CryptoBackendXmlSec1(self.binary)
            return self._backend

    def verify(
        self, xml: bytes, node_name: str, node_id: str, certs: Sequence[str], hint: str | None
    ) -> bool:
        """True if the enveloped signature of element `node_id` verifies with a trusted cert.

        xmlsec1 is limited to same-document references and raw keys, and the
        trusted certificate is passed explicitly, so a key or certificate
        carried in the message's KeyInfo can never be the one that verifies.
        """
        backend = self._get()
        for cert in ordered(certs, hint):
            with _temp_file(pem(cert).encode(), ".pem") as cert_file, suppress(SigverError):
                if backend.validate_signature(xml, cert_file, "pem", node_name, node_id):
                    return True
        return False

    def decrypt(self, xml: bytes, key_files: Sequence[Path]) -> bytes:
        """The document with its EncryptedData replaced by the plaintext, or decrypt_failed."""
        backend = self._get()
        for key_file in key_files:
            with suppress(SigverError):
                plain = backend.decrypt(xml, str(key_file))
                if plain:
                    return plain.encode("utf-8") if isinstance(plain, str) else plain
        raise ProtocolError(
            "decrypt_failed", "no SP key decrypts the assertion (check sp_keys and the IdP's cert)"
        )


def _der_ecdsa(raw: bytes) -> bytes:
    """XML Signature carries ECDSA as r || s; cryptography wants DER."""
    half = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:half]), int.from_bytes(raw[half:]))


def verify_query_signature(
    signed: bytes, sig_alg: str, signature_b64: str, certs: Sequence[str]
) -> bool:
    """HTTP-Redirect binding signature over the raw query octets, with trusted certs only."""
    algorithm = SIGNATURE_HASHES.get(sig_alg)
    if algorithm is None:
        raise _weak("signature", sig_alg)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    for cert in certs:
        key = public_key(cert)
        with suppress(InvalidSignature, ValueError):
            if isinstance(key, rsa.RSAPublicKey) and "rsa-" in sig_alg:
                key.verify(signature, signed, padding.PKCS1v15(), algorithm)
                return True
            if isinstance(key, ec.EllipticCurvePublicKey) and "ecdsa-" in sig_alg:
                key.verify(_der_ecdsa(signature), signed, ec.ECDSA(algorithm))
                return True
    return False
