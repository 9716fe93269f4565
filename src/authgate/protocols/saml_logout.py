"""Single logout messages from the IdP: LogoutRequest (IdP-initiated) and LogoutResponse.

Three bindings are read here. HTTP-Redirect signatures cover the raw query
octets exactly as the IdP sent them (re-encoding them, as pysaml2 does,
breaks against IdPs that percent-encode differently); HTTP-POST messages
carry an enveloped signature checked like an assertion's, and so do SOAP
ones (the IdP's server calling ours, back-channel: the LogoutRequest is the
one element of a SOAP 1.1 Body). A LogoutRequest must be signed: it ends
sessions. CPU-bound (libxmlsec1): call from an executor.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_plus

from lxml import etree

from authgate.errors import ProtocolError
from authgate.protocols import xml_hardening
from authgate.protocols.saml_crypto import (
    XmlSec,
    check_signature_shape,
    verify_query_signature,
)
from authgate.protocols.saml_validate import check_unique_ids
from authgate.protocols.saml_xml import (
    DS,
    SAML,
    SAMLP,
    SOAP_ENV,
    SOAP_ENV_NS,
    STATUS_SUCCESS,
    child,
    children,
    parse_instant,
    text,
)

Kind = Literal["SAMLRequest", "SAMLResponse"]
_SIGNED_ORDER = ("RelayState", "SigAlg")


@dataclass(frozen=True, slots=True)
class LogoutPolicy:
    idp_entity_id: str
    idp_certs: tuple[str, ...]
    slo_url: str
    soap_url: str
    clock_skew: float
    max_size: int


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A SAML message as received, with what its signature covers."""

    binding: Literal["redirect", "post", "soap"]
    kind: Kind
    message: str
    relay_state: str | None = None
    sig_alg: str | None = None
    signature: str | None = None
    signed_octets: bytes = b""


@dataclass(frozen=True, slots=True)
class LogoutRequestData:
    request_id: str
    name_id: str
    session_indexes: tuple[str, ...]
    relay_state: str | None


@dataclass(frozen=True, slots=True)
class LogoutResponseData:
    in_response_to: str
    success: bool
    status: str


def redirect_message(raw_query: str, kind: Kind) -> IncomingMessage:
    """Split the raw query without decoding first, keeping the signed octets intact."""
    raw: dict[str, str] = {}
    for piece in raw_query.split("&"):
        name, _, value = piece.partition("=")
        name = unquote_plus(name)
        if name in raw:
            raise ProtocolError("invalid_request", f"query parameter {name} is repeated")
        raw[name] = value
    if kind not in raw:
        raise ProtocolError("invalid_request", f"no {kind} in the query")
    signed = "&".join(f"{n}={raw[n]}" for n in (kind, *_SIGNED_ORDER) if n in raw)
    value = {n: unquote_plus(v) for n, v in raw.items()}
    return IncomingMessage(
        binding="redirect",
        kind=kind,
        message=value[kind],
        relay_state=value.get("RelayState"),
        sig_alg=value.get("SigAlg"),
        signature=value.get("Signature"),
        signed_octets=signed.encode("ascii", "replace"),
    )


def post_message(form: Mapping[str, str], kind: Kind) -> IncomingMessage:
    return IncomingMessage(
        binding="post", kind=kind, message=form[kind], relay_state=form.get("RelayState")
    )


def soap_message(body: bytes) -> IncomingMessage:
    """A SOAP request body, carried base64-encoded like the other bindings' messages."""
    return IncomingMessage(
        binding="soap", kind="SAMLRequest", message=base64.b64encode(body).decode()
    )


def soap_envelope(message: bytes) -> bytes:
    """`message` (a serialised SAML element, ours) as the one element of a SOAP 1.1 Body;
    moving it keeps its signature valid (exclusive canonicalization ignores the envelope)."""
    envelope = etree.Element(SOAP_ENV + "Envelope", nsmap={"SOAP-ENV": SOAP_ENV_NS})
    etree.SubElement(envelope, SOAP_ENV + "Body").append(etree.fromstring(message))
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def _open(msg: IncomingMessage, policy: LogoutPolicy) -> etree._Element:
    data = xml_hardening.b64decode(msg.message, policy.max_size)
    if msg.binding == "redirect":
        data = xml_hardening.inflate(data, policy.max_size)
    root = xml_hardening.parse(data, policy.max_size)
    check_unique_ids(root)
    return soap_body(root) if msg.binding == "soap" else root


def soap_body(envelope: etree._Element) -> etree._Element:
    """The one element of a SOAP 1.1 Body; a header the sender says we must understand
    (none is defined for SAML's SOAP binding) refuses the message, as SOAP requires."""
    if envelope.tag != SOAP_ENV + "Envelope":
        raise ProtocolError("invalid_request", "expected a SOAP 1.1 Envelope")
    header = child(envelope, SOAP_ENV + "Header")
    for entry in children(header) if header is not None else []:
        if entry.get(SOAP_ENV + "mustUnderstand") in ("1", "true"):
            raise ProtocolError("invalid_request", "a SOAP header must be understood")
    body = children(envelope, SOAP_ENV + "Body")
    content = children(body[0]) if len(body) == 1 else []
    if len(content) != 1:
        raise ProtocolError("invalid_request", "the SOAP Body must hold exactly one message")
    return content[0]


def _signed(
    msg: IncomingMessage, root: etree._Element, policy: LogoutPolicy, xmlsec: XmlSec
) -> bool:
    what = etree.QName(root).localname
    if msg.binding == "redirect":
        if msg.signature is None:
            return False
        if msg.sig_alg is None or not verify_query_signature(
            msg.signed_octets, msg.sig_alg, msg.signature, policy.idp_certs
        ):
            raise ProtocolError("signature_invalid", f"the {what} signature does not verify")
        return True
    for signature in root.iter(DS + "Signature"):
        if signature.getparent() is not root:
            raise ProtocolError("signature_invalid", f"a signature inside the {what} body")
    signature = child(root, DS + "Signature")
    if signature is None:
        return False
    after = SAML + "Issuer" if child(root, SAML + "Issuer") is not None else None
    check_signature_shape(signature, root, after)
    if not xmlsec.verify(signature, policy.idp_certs):
        raise ProtocolError("signature_invalid", f"the {what} signature does not verify")
    return True


def _common(
    root: etree._Element, policy: LogoutPolicy, signed: bool, tag: str, endpoint: str
) -> None:
    """Tag, version, Issuer, and the Destination (`endpoint`, the URL the message came to)."""
    what = etree.QName(tag).localname
    if root.tag != tag or root.get("Version") != "2.0" or not root.get("ID"):
        raise ProtocolError("invalid_request", f"expected a SAML 2.0 {what} with an ID")
    issuer = text(child(root, SAML + "Issuer"))
    if issuer != policy.idp_entity_id:
        raise ProtocolError("issuer_mismatch", f"the {what} was issued by {issuer or 'nobody'}")
    destination = root.get("Destination")
    if (destination is None and signed) or (destination and destination != endpoint):
        raise ProtocolError(
            "audience_mismatch", f"the {what} Destination {destination!r} is not {endpoint}"
        )


def read_logout_request(
    msg: IncomingMessage, policy: LogoutPolicy, xmlsec: XmlSec, now: float
) -> LogoutRequestData:
    """A signed, current LogoutRequest from this connection's IdP."""
    root = _open(msg, policy)
    signed = _signed(msg, root, policy, xmlsec)
    endpoint = policy.soap_url if msg.binding == "soap" else policy.slo_url
    _common(root, policy, signed, SAMLP + "LogoutRequest", endpoint)
    if not signed:
        raise ProtocolError("signature_invalid", "the LogoutRequest is not signed")
    end = parse_instant(root.get("NotOnOrAfter"), "LogoutRequest NotOnOrAfter")
    if end is not None and now - policy.clock_skew >= end:
        raise ProtocolError("expired", "the LogoutRequest has expired")
    name_id = text(child(root, SAML + "NameID"))
    if not name_id:
        raise ProtocolError("invalid_request", "the LogoutRequest names no NameID")
    return LogoutRequestData(
        request_id=root.get("ID", ""),
        name_id=name_id,
        session_indexes=tuple(text(s) for s in children(root, SAMLP + "SessionIndex")),
        relay_state=msg.relay_state,
    )


def read_logout_response(
    msg: IncomingMessage, policy: LogoutPolicy, xmlsec: XmlSec
) -> LogoutResponseData:
    """The IdP's answer to our LogoutRequest; a signature, when present, must verify."""
    root = _open(msg, policy)
    signed = _signed(msg, root, policy, xmlsec)
    _common(root, policy, signed, SAMLP + "LogoutResponse", policy.slo_url)
    code = root.find(f"{SAMLP}Status/{SAMLP}StatusCode")
    status = code.get("Value", "") if code is not None else ""
    return LogoutResponseData(
        in_response_to=root.get("InResponseTo", ""),
        success=status == STATUS_SUCCESS,
        status=status,
    )
