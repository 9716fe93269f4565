"""XML signature and encryption for SAML: algorithm allowlists, signature shape, libxmlsec1.

Cryptography runs in-process in libxmlsec1 (the `xmlsec` package), on the
very lxml tree the validators read, always with keys given explicitly: the
IdP metadata's certificates for signatures, the SP's keys for decryption,
never a key a message carries. Before libxmlsec1 runs, the shape of every
signature is checked here: one enveloped signature, one Reference to its
parent's ID, only allowlisted transforms and algorithms, no ds:Object or
ds:Manifest; the signature context then enables only those transforms as
well. The work is CPU-bound (about a millisecond per operation, mostly
outside the GIL), so callers still run it in an executor, off the event loop.

`xmlsec` and lxml each bundle libxml2 and pass trees between them, so both
must carry the same libxml2 minor version; pyproject.toml pins the pair.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path

import xmlsec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

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
    (`after`; first child for metadata), as SAML places it, so that exactly
    one signature at a known place can vouch for an element; with one
    Reference to the parent's ID and nothing that could carry unsigned content.
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


def check_encryption_shape(encrypted: etree._Element, what: str = "assertion") -> None:
    """One EncryptedData with allowlisted algorithms; key references stay inside the message.

    `encrypted` is the SAML holder (EncryptedAssertion, EncryptedID or
    EncryptedAttribute); `what` names it in the refusal.
    """
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
        raise ProtocolError("decrypt_failed", f"the encrypted {what} carries no EncryptedKey")
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
    """Trusted certificates, the one the message names first (saves a verification on rollover)."""
    return sorted(certs, key=lambda c: c != hint)


def _transforms(algorithms: Iterable[str]) -> tuple[xmlsec.Transform, ...]:
    """libxmlsec1's transforms for allowlisted algorithm URIs (KeyError if one is missing)."""
    known = {t.href: t for t in vars(xmlsec.constants).values() if hasattr(t, "usage")}
    return tuple(known[uri] for uri in sorted(algorithms))


REFERENCE_TRANSFORMS = _transforms(TRANSFORMS | DIGESTS)
SIGNATURE_TRANSFORMS = _transforms(CANONICALIZATIONS | SIGNATURE_HASHES.keys())


class XmlSec:
    """libxmlsec1 in-process, on the caller's own lxml tree, with keys it is given only.

    Construction removes xmlsec's I/O callbacks for the whole process, so no
    ds:Reference or RetrievalMethod can read a file or URL: only same-document
    references resolve (what `xmlsec1 --enabled-reference-uris same-doc` did).
    """

    def __init__(self) -> None:
        xmlsec.cleanup_callbacks()
        self._cert_keys: dict[str, xmlsec.Key | None] = {}
        self._sp_keys: dict[Path, tuple[tuple[int, ...], xmlsec.KeysManager | None]] = {}

    def verify(self, signature: etree._Element, certs: Sequence[str]) -> bool:
        """True if the enveloped `signature` verifies over its parent with a trusted cert.

        The signature context gets no keys manager and the trusted key is set
        on it explicitly, so libxmlsec1 never reads KeyInfo: a key or
        certificate carried in the message can never be the one that verifies.
        Only the parent's ID attribute is registered, and the parser collected
        no IDs, so the Reference (already checked to be `#` + that ID) can
        resolve to that element only: the element whose values authgate reads.
        """
        for cert in ordered(certs, embedded_certificate(signature)):
            key = self._cert_key(cert)
            if key is not None and _verifies(signature, key):
                return True
        return False

    def decrypt(self, encrypted: etree._Element, key_files: Sequence[Path]) -> bytes:
        """The document with `encrypted`'s EncryptedData replaced by its plaintext, serialised.

        The replacement happens in the caller's tree; serialising it makes the
        plaintext pass the XML gate again like any input.
        """
        self._decrypt_in_place(encrypted, key_files, "assertion")
        return etree.tostring(encrypted.getroottree())

    def decrypt_element(
        self, encrypted: etree._Element, key_files: Sequence[Path], what: str
    ) -> bytes:
        """`encrypted` alone (an EncryptedID or EncryptedAttribute inside an assertion whose
        signature has been checked) with its plaintext in place, serialised for the XML gate."""
        self._decrypt_in_place(encrypted, key_files, what)
        return etree.tostring(encrypted)

    def _decrypt_in_place(
        self, encrypted: etree._Element, key_files: Sequence[Path], what: str
    ) -> None:
        """Replace `encrypted`'s EncryptedData by its plaintext, with an SP key only.

        Ids inside
        `encrypted` are registered so that a RetrievalMethod to a sibling
        EncryptedKey (as Okta sends) resolves; `check_encryption_shape` keeps
        such references inside the message. Each SP key sits in a keys manager
        of its own, so the key-encryption key is always one of ours: a key in
        the EncryptedKey's KeyInfo, even a private one, is never used.
        """
        data = child(encrypted, XENC + "EncryptedData")
        if data is None:
            raise ProtocolError("decrypt_failed", f"the encrypted {what} has no EncryptedData")
        xmlsec.tree.add_ids(encrypted, ["Id"])
        for key_file in key_files:
            manager = self._sp_keys_manager(key_file)
            if manager is None:
                continue
            with suppress(xmlsec.Error):
                xmlsec.EncryptionContext(manager).decrypt(data)
                return
        raise ProtocolError(
            "decrypt_failed", f"no SP key decrypts the {what} (check sp_keys and the IdP's cert)"
        )

    def _cert_key(self, cert_b64: str) -> xmlsec.Key | None:
        """A metadata certificate's public key, loaded once."""
        if cert_b64 not in self._cert_keys:
            try:
                key = xmlsec.Key.from_memory(pem(cert_b64), xmlsec.KeyFormat.CERT_PEM)
            except xmlsec.Error:
                key = None
            self._cert_keys[cert_b64] = key
        return self._cert_keys[cert_b64]

    def _sp_keys_manager(self, path: Path) -> xmlsec.KeysManager | None:
        """A keys manager holding one SP private key, rebuilt only when its file changes.

        Building one loads the system's CA store (about 10 ms, holding the
        GIL); using one only reads it, so one is kept per key file.
        """
        try:
            info = path.stat()
        except OSError:
            return None
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        cached = self._sp_keys.get(path)
        if cached is None or cached[0] != stamp:
            cached = self._sp_keys[path] = (stamp, _keys_manager(path))
        return cached[1]


def _keys_manager(key_file: Path) -> xmlsec.KeysManager | None:
    manager = xmlsec.KeysManager()
    try:
        manager.add_key(xmlsec.Key.from_file(str(key_file), xmlsec.KeyFormat.PEM))
    except xmlsec.Error:
        return None
    return manager


def _verifies(signature: etree._Element, key: xmlsec.Key) -> bool:
    context = xmlsec.SignatureContext()
    context.key = key
    for transform in REFERENCE_TRANSFORMS:
        context.enable_reference_transform(transform)
    for transform in SIGNATURE_TRANSFORMS:
        context.enable_signature_transform(transform)
    try:
        context.register_id(signature.getparent(), "ID")
        context.verify(signature)
    except xmlsec.Error:
        return False
    return True


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
