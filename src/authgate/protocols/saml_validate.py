"""Every check of an SSO response at the ACS, done by authgate itself.

pysaml2 leaves several of these to the application (or is lenient by
default), so the whole decision is made here, in order, each refusal with
its SPEC §8 reason code:

1. size and base64 bounds, then XML without DTDs or entities (`xml_hardening`);
2. the IdP's Status (`idp_error`);
3. structure: unique IDs, exactly one assertion anywhere in the document,
   signatures only where SAML puts them (defeats signature wrapping);
4. Issuer, Destination;
5. the response signature, if any, with the IdP's metadata keys only;
6. decryption with the SP keys (only allowlisted algorithms), then the
   same structural checks on the plaintext;
7. the assertion signature; something must be signed (an encrypted but
   unsigned assertion is refused);
8. assertion Issuer, Subject/NameID, bearer confirmation (Recipient,
   expiry), Conditions (time window with clock skew, audience), AuthnStatement.

The result is plain data; nothing parsed here leaves as an lxml or pysaml2 object.
CPU-bound (libxmlsec1 verifies and decrypts in-process): call it from an executor.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from authgate.errors import ProtocolError
from authgate.protocols import xml_hardening
from authgate.protocols.saml_crypto import (
    XmlSec,
    check_encryption_shape,
    check_signature_shape,
)
from authgate.protocols.saml_xml import (
    CM_BEARER,
    DS,
    ENTITY_FORMAT,
    SAML,
    SAMLP,
    STATUS_SUCCESS,
    XENC,
    XSI_NIL,
    child,
    children,
    parse_instant,
    text,
)

_ID_ATTRIBUTES = ("ID", "Id", "id")


@dataclass(frozen=True, slots=True)
class AcsPolicy:
    """What a response must match: the IdP, this SP, and how strict to be."""

    idp_entity_id: str
    idp_certs: tuple[str, ...]
    sp_entity_id: str
    acs_url: str
    decryption_keys: tuple[Path, ...] = ()
    want_assertions_signed: bool = True
    want_response_signed: bool = False
    clock_skew: float = 180.0
    max_size: int = xml_hardening.DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class AssertionData:
    """The validated content of one assertion, as plain values."""

    issuer: str
    assertion_id: str
    in_response_to: str | None
    name_id: str
    name_id_format: str | None
    name_qualifier: str | None
    sp_name_qualifier: str | None
    session_index: str | None
    session_not_on_or_after: float | None
    not_on_or_after: float
    attributes: dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class _Clock:
    now: float
    skew: float

    def not_before(self, value: str | None, what: str) -> None:
        start = parse_instant(value, what)
        if start is not None and self.now + self.skew < start:
            raise ProtocolError("not_yet_valid", f"{what} is {value}: not valid yet")

    def not_on_or_after(self, value: str | None, what: str) -> float | None:
        end = parse_instant(value, what)
        if end is not None and self.now - self.skew >= end:
            raise ProtocolError("expired", f"{what} was {value}: expired")
        return end


def _wrapping(detail: str) -> ProtocolError:
    return ProtocolError("signature_invalid", detail)


def check_status(root: etree._Element) -> None:
    """A non-Success status is the IdP refusing the login; report its codes and message."""
    status = child(root, SAMLP + "Status")
    code = child(status, SAMLP + "StatusCode") if status is not None else None
    if code is None:
        raise ProtocolError("invalid_request", "the response has no Status")
    if code.get("Value") == STATUS_SUCCESS:
        return
    codes = [code.get("Value", "")]
    codes += [c.get("Value", "") for c in code.iter(SAMLP + "StatusCode") if c is not code]
    message = text(child(status, SAMLP + "StatusMessage")) if status is not None else ""
    short = " / ".join(c.rsplit(":", 1)[-1] for c in codes)
    raise ProtocolError(
        "idp_error", f"the IdP answered {short}" + (f": {message}" if message else "")
    )


def check_unique_ids(root: etree._Element) -> None:
    counts = Counter(
        value for node in root.iter() if isinstance(node.tag, str)
        for name in _ID_ATTRIBUTES if (value := node.get(name)) is not None
    )  # fmt: skip
    duplicates = [value for value, n in counts.items() if n > 1]
    if duplicates:
        raise _wrapping(f"duplicate ID {duplicates[0]!r} in the response (signature wrapping)")


def single_assertion(root: etree._Element) -> etree._Element:
    """The only Assertion or EncryptedAssertion of the document, a direct child of the root."""
    found = [*root.iter(SAML + "Assertion"), *root.iter(SAML + "EncryptedAssertion")]
    if not found:
        raise ProtocolError("invalid_request", "the response carries no assertion")
    if len(found) > 1:
        raise _wrapping(f"the response carries {len(found)} assertions; exactly one is accepted")
    if len(list(root.iter(SAMLP + "Response"))) != 1:
        raise _wrapping("a Response is nested inside the response (signature wrapping)")
    assertion = found[0]
    if assertion.getparent() is not root:
        raise _wrapping("the assertion is not a direct child of the Response (signature wrapping)")
    return assertion


def check_signature_places(root: etree._Element, assertion: etree._Element) -> None:
    """Signatures may only sit directly in the Response or the assertion, nowhere else."""
    for signature in root.iter(DS + "Signature"):
        if signature.getparent() not in (root, assertion):
            where = etree.QName(signature.getparent()).localname
            raise _wrapping(f"a signature inside {where} is not accepted (signature wrapping)")


# Where SAML puts encrypted parts of an assertion, by holder: the element it sits in.
_ENCRYPTED_PARTS = {
    SAML + "EncryptedID": SAML + "Subject",
    SAML + "EncryptedAttribute": SAML + "AttributeStatement",
}


def check_encrypted_places(root: etree._Element, assertion: etree._Element) -> None:
    """Encrypted content may only be the assertion itself, its Subject's EncryptedID or an
    EncryptedAttribute of one of its AttributeStatements: the places authgate decrypts, inside
    the element whose signature it checks. Anywhere else it is refused (signature wrapping)."""
    for node in root.iter(XENC + "EncryptedData", *_ENCRYPTED_PARTS):
        holder = node if node.tag in _ENCRYPTED_PARTS else node.getparent()
        if holder is None or holder is assertion:
            continue
        place = holder.getparent()
        if (
            place is not None
            and place.getparent() is assertion
            and _ENCRYPTED_PARTS.get(holder.tag) == place.tag
        ):
            continue
        where = etree.QName(place if place is not None else root).localname
        raise _wrapping(f"encrypted content in {where} is not accepted (signature wrapping)")


def check_issuer(node: etree._Element, expected: str, what: str, required: bool) -> None:
    issuer = child(node, SAML + "Issuer")
    if issuer is None:
        if required:
            raise ProtocolError("issuer_mismatch", f"the {what} has no Issuer")
        return
    if issuer.get("Format") not in (None, ENTITY_FORMAT):
        raise ProtocolError(
            "issuer_mismatch", f"the {what} Issuer has Format {issuer.get('Format')}"
        )
    if text(issuer) != expected:
        raise ProtocolError(
            "issuer_mismatch", f"the {what} was issued by {text(issuer)!r}, expected {expected!r}"
        )


def _signature_after(node: etree._Element) -> str | None:
    return SAML + "Issuer" if child(node, SAML + "Issuer") is not None else None


def _verify(node: etree._Element, policy: AcsPolicy, xmlsec: XmlSec, what: str) -> bool:
    """True if `node` is signed and the signature verifies; False if it is not signed."""
    signature = child(node, DS + "Signature")
    if signature is None:
        return False
    check_signature_shape(signature, node, _signature_after(node))
    if not xmlsec.verify(signature, policy.idp_certs):
        raise ProtocolError(
            "signature_invalid", f"the {what} signature does not verify with the IdP's certificates"
        )
    return True


def _decrypt(
    root: etree._Element, encrypted: etree._Element, policy: AcsPolicy, xmlsec: XmlSec
) -> tuple[etree._Element, etree._Element]:
    check_encryption_shape(encrypted)
    if not policy.decryption_keys:
        raise ProtocolError("decrypt_failed", "the assertion is encrypted but no SP key is set")
    plain = xmlsec.decrypt(encrypted, policy.decryption_keys)
    new_root = xml_hardening.parse(plain, max(policy.max_size, len(plain)))
    if new_root.tag != root.tag or new_root.get("ID") != root.get("ID"):
        raise ProtocolError("decrypt_failed", "decryption did not yield the same response")
    check_unique_ids(new_root)
    assertions = list(new_root.iter(SAML + "Assertion"))
    holder = child(new_root, SAML + "EncryptedAssertion")
    if len(assertions) != 1 or holder is None or assertions[0].getparent() is not holder:
        raise _wrapping("the decrypted content is not exactly one assertion")
    check_signature_places(new_root, assertions[0])
    check_encrypted_places(new_root, assertions[0])
    return new_root, assertions[0]


def _decrypted_part(
    holder: etree._Element, tag: str, policy: AcsPolicy, xmlsec: XmlSec
) -> etree._Element:
    """The one `tag` element an EncryptedID or EncryptedAttribute holds, decrypted with an SP
    key. Only called on parts of an assertion whose signature (or whose response's) has
    been checked, so the ciphertext is what the IdP signed."""
    what = "NameID" if tag == SAML + "NameID" else "attribute"
    check_encryption_shape(holder, what)
    if not policy.decryption_keys:
        raise ProtocolError("decrypt_failed", f"the {what} is encrypted but no SP key is set")
    plain = xmlsec.decrypt_element(holder, policy.decryption_keys, what)
    opened = xml_hardening.parse(plain, max(policy.max_size, len(plain)))
    found = [node for node in children(opened) if node.tag != XENC + "EncryptedKey"]
    if len(found) != 1 or found[0].tag != tag or next(opened.iter(XENC + "EncryptedData"), None):
        raise ProtocolError("decrypt_failed", f"the encrypted {what} is not one {what}")
    return found[0]


def validate_response(
    saml_response: str | bytes, policy: AcsPolicy, xmlsec: XmlSec, now: float
) -> AssertionData:
    """Run every ACS check on a base64 SAMLResponse; raise `ProtocolError` at the first failure."""
    xml = xml_hardening.b64decode(saml_response, policy.max_size)
    return validate_response_xml(xml, policy, xmlsec, now)


def validate_response_xml(
    xml: bytes, policy: AcsPolicy, xmlsec: XmlSec, now: float
) -> AssertionData:
    """Every ACS check on a Response document: a POSTed one (decoded) or one an
    ArtifactResponse carried (`saml_artifact`), so both bindings get the same checks."""
    root = xml_hardening.parse(xml, policy.max_size)
    if root.tag != SAMLP + "Response":
        raise ProtocolError("invalid_request", f"expected a samlp:Response, got {root.tag}")
    if root.get("Version") != "2.0" or not root.get("ID"):
        raise ProtocolError("invalid_request", "the response is not a SAML 2.0 Response with an ID")
    check_status(root)
    check_unique_ids(root)
    assertion = single_assertion(root)
    check_signature_places(root, assertion)
    check_encrypted_places(root, assertion)
    check_issuer(root, policy.idp_entity_id, "response", required=False)
    response_signed = _verify(root, policy, xmlsec, "response")
    _check_destination(root, policy.acs_url, response_signed)
    if not response_signed and policy.want_response_signed:
        raise ProtocolError(
            "signature_invalid", "the response is not signed (want_response_signed)"
        )
    if assertion.tag == SAML + "EncryptedAssertion":
        root, assertion = _decrypt(root, assertion, policy, xmlsec)
    check_issuer(assertion, policy.idp_entity_id, "assertion", required=True)
    assertion_signed = _verify(assertion, policy, xmlsec, "assertion")
    if not assertion_signed and (policy.want_assertions_signed or not response_signed):
        raise ProtocolError("signature_invalid", "the assertion is not signed")
    return _read_assertion(root, assertion, policy, xmlsec, _Clock(now, policy.clock_skew))


def _check_destination(root: etree._Element, acs_url: str, signed: bool) -> None:
    destination = root.get("Destination")
    if destination is None and signed:
        raise ProtocolError("audience_mismatch", "a signed response must name its Destination")
    if destination is not None and destination != acs_url:
        raise ProtocolError(
            "audience_mismatch", f"Destination {destination!r} is not this ACS URL {acs_url!r}"
        )


def _read_assertion(
    root: etree._Element,
    assertion: etree._Element,
    policy: AcsPolicy,
    xmlsec: XmlSec,
    clock: _Clock,
) -> AssertionData:
    if assertion.get("Version") != "2.0" or not assertion.get("ID"):
        raise ProtocolError("invalid_request", "the assertion is not SAML 2.0 or has no ID")
    clock.not_before(assertion.get("IssueInstant"), "the assertion IssueInstant")
    subject = child(assertion, SAML + "Subject")
    if subject is None:
        raise ProtocolError("invalid_request", "the assertion has no Subject")
    name_id = _name_id(subject, policy, xmlsec)
    confirmation_expiry, confirmed_request = _bearer_confirmation(subject, policy.acs_url, clock)
    in_response_to = root.get("InResponseTo")
    if confirmed_request and in_response_to and confirmed_request != in_response_to:
        raise ProtocolError("invalid_request", "InResponseTo differs in Response and Subject")
    conditions_expiry = _conditions(assertion, policy.sp_entity_id, clock)
    authn = children(assertion, SAML + "AuthnStatement")
    if not authn:
        raise ProtocolError("invalid_request", "the assertion has no AuthnStatement")
    session_end = clock.not_on_or_after(
        authn[0].get("SessionNotOnOrAfter"), "the session (SessionNotOnOrAfter)"
    )
    ends = [t for t in (confirmation_expiry, conditions_expiry) if t is not None]
    return AssertionData(
        issuer=policy.idp_entity_id,
        assertion_id=assertion.get("ID", ""),
        in_response_to=in_response_to or confirmed_request,
        name_id=text(name_id),
        name_id_format=name_id.get("Format"),
        name_qualifier=name_id.get("NameQualifier"),
        sp_name_qualifier=name_id.get("SPNameQualifier"),
        session_index=authn[0].get("SessionIndex"),
        session_not_on_or_after=session_end,
        not_on_or_after=min(ends),
        attributes=_attributes(assertion, policy, xmlsec),
    )


def _name_id(subject: etree._Element, policy: AcsPolicy, xmlsec: XmlSec) -> etree._Element:
    """The Subject's NameID, in the clear or as an EncryptedID; never both, never two."""
    found = [*children(subject, SAML + "NameID"), *children(subject, SAML + "EncryptedID")]
    if not found:
        raise ProtocolError("invalid_request", "the Subject has no NameID")
    if len(found) > 1:
        raise ProtocolError("invalid_request", "the Subject has more than one NameID")
    name_id = found[0]
    if name_id.tag == SAML + "EncryptedID":
        name_id = _decrypted_part(name_id, SAML + "NameID", policy, xmlsec)
    if children(name_id):
        raise ProtocolError("invalid_request", "the NameID contains elements")
    if not text(name_id):
        raise ProtocolError("invalid_request", "the NameID is empty")
    return name_id


def _bearer_confirmation(
    subject: etree._Element, acs_url: str, clock: _Clock
) -> tuple[float, str | None]:
    """The bearer SubjectConfirmation for this ACS: (its NotOnOrAfter, its InResponseTo)."""
    bearers = [
        data
        for confirmation in children(subject, SAML + "SubjectConfirmation")
        if confirmation.get("Method") == CM_BEARER
        and (data := child(confirmation, SAML + "SubjectConfirmationData")) is not None
    ]
    if not bearers:
        raise ProtocolError("invalid_request", "the Subject has no bearer SubjectConfirmationData")
    ours = [d for d in bearers if d.get("Recipient") == acs_url]
    if not ours:
        recipients = ", ".join(repr(d.get("Recipient")) for d in bearers)
        raise ProtocolError(
            "audience_mismatch", f"Recipient {recipients} is not this ACS URL {acs_url!r}"
        )
    data = ours[0]
    if data.get("NotOnOrAfter") is None:
        raise ProtocolError("invalid_request", "the bearer confirmation has no NotOnOrAfter")
    clock.not_before(data.get("NotBefore"), "the bearer confirmation NotBefore")
    expiry = clock.not_on_or_after(data.get("NotOnOrAfter"), "the bearer confirmation")
    assert expiry is not None
    return expiry, data.get("InResponseTo")


def _conditions(assertion: etree._Element, sp_entity_id: str, clock: _Clock) -> float | None:
    conditions = child(assertion, SAML + "Conditions")
    if conditions is None:
        raise ProtocolError("audience_mismatch", "the assertion has no Conditions/Audience")
    clock.not_before(conditions.get("NotBefore"), "Conditions NotBefore")
    expiry = clock.not_on_or_after(conditions.get("NotOnOrAfter"), "Conditions NotOnOrAfter")
    restrictions = children(conditions, SAML + "AudienceRestriction")
    if not restrictions:
        raise ProtocolError("audience_mismatch", "the assertion has no AudienceRestriction")
    for restriction in restrictions:
        audiences = [text(a) for a in children(restriction, SAML + "Audience")]
        if sp_entity_id not in audiences:
            raise ProtocolError(
                "audience_mismatch",
                f"the assertion is for {', '.join(audiences) or 'nobody'}, not {sp_entity_id}",
            )
    return expiry


def _attributes(
    assertion: etree._Element, policy: AcsPolicy, xmlsec: XmlSec
) -> dict[str, tuple[str, ...]]:
    """Attribute values by Name, and by FriendlyName as well when the IdP sends one;
    EncryptedAttributes are decrypted with the SP key and read like the others."""
    found: dict[str, list[str]] = {}
    for statement in children(assertion, SAML + "AttributeStatement"):
        for attribute in children(statement):
            if attribute.tag == SAML + "EncryptedAttribute":
                attribute = _decrypted_part(attribute, SAML + "Attribute", policy, xmlsec)
            elif attribute.tag != SAML + "Attribute":
                continue
            values = [
                text(v)
                for v in children(attribute, SAML + "AttributeValue")
                if v.get(XSI_NIL) not in ("true", "1")
            ]
            for key in {attribute.get("Name"), attribute.get("FriendlyName")} - {None, ""}:
                found.setdefault(str(key), []).extend(values)
    return {k: tuple(dict.fromkeys(v)) for k, v in found.items()}
