"""Names and small readers shared by the SAML modules, over lxml trees from `xml_hardening`."""

from __future__ import annotations

import datetime as dt
import re

from lxml import etree

from authgate.errors import ProtocolError

SAMLP = "{urn:oasis:names:tc:SAML:2.0:protocol}"
SAML = "{urn:oasis:names:tc:SAML:2.0:assertion}"
MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
XENC = "{http://www.w3.org/2001/04/xmlenc#}"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENV = "{" + SOAP_ENV_NS + "}"

PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_ARTIFACT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"
BINDING_SOAP = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP"
BINDINGS = {"redirect": BINDING_REDIRECT, "post": BINDING_POST}
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
ENTITY_FORMAT = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"
NAMEID_FORMATS = {
    "unspecified": "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
    "emailAddress": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    "persistent": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
}

_INSTANT = re.compile(
    r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?$"
)


def children(node: etree._Element, tag: str | None = None) -> list[etree._Element]:
    """Child elements (optionally of one tag): comments and PIs are not structure."""
    return [c for c in node if isinstance(c.tag, str) and (tag is None or c.tag == tag)]


def child(node: etree._Element, tag: str) -> etree._Element | None:
    found = children(node, tag)
    return found[0] if found else None


def previous_element(node: etree._Element) -> etree._Element | None:
    sibling = node.getprevious()
    while sibling is not None and not isinstance(sibling.tag, str):
        sibling = sibling.getprevious()
    return sibling


def text(node: etree._Element | None) -> str:
    """The full string value: a comment inside the element never truncates it.

    lxml's `.text` stops at the first comment (`alice@example.com<!---->.evil.test`
    reads as `alice@example.com`), which is the classic SAML NameID
    truncation bug; the XPath string value joins every text node.
    """
    if node is None:
        return ""
    return str(node.xpath("string()")).strip()


def parse_instant(value: str | None, what: str) -> float | None:
    """xs:dateTime (SAML requires UTC) to a POSIX timestamp; None when absent."""
    if value is None:
        return None
    match = _INSTANT.match(value.strip())
    if not match:
        raise ProtocolError("invalid_request", f"{what} {value!r} is not an xs:dateTime")
    date, clock, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    offset = zone if zone and zone != "Z" else "+00:00"
    try:
        stamp = dt.datetime.fromisoformat(f"{date}T{clock}.{micro}{offset}")
    except ValueError:
        raise ProtocolError("invalid_request", f"{what} {value!r} is not a valid time") from None
    return stamp.timestamp()


def iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
