"""The only way XML from outside enters authgate: bounded, decoded, parsed without DTDs.

Every SAML message and IdP metadata document passes through here before any
other code (pysaml2, xmlsec1, the validators) sees it. The parser never loads
a DTD, never resolves an entity, never touches the network, and a document
that merely declares a DOCTYPE is refused outright, so entity expansion and
external references cannot happen anywhere further down.
"""

from __future__ import annotations

import base64
import binascii
import zlib

import defusedxml.ElementTree as safe_etree
from defusedxml import DefusedXmlException
from lxml import etree

from authgate.errors import ProtocolError

DEFAULT_LIMIT = 256 * 1024

_PARSER_OPTIONS = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": False,
    "remove_pis": False,
    "collect_ids": False,
}


def _refuse(detail: str) -> ProtocolError:
    return ProtocolError("invalid_request", detail)


def b64decode(text: str | bytes, limit: int = DEFAULT_LIMIT) -> bytes:
    """Strict base64 (whitespace tolerated, as IdPs wrap lines), bounded before decoding."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if len(raw) > limit * 4 // 3 + 1024:
        raise _refuse(f"message larger than {limit} bytes")
    compact = b"".join(raw.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("message is not valid base64") from None


def inflate(data: bytes, limit: int = DEFAULT_LIMIT) -> bytes:
    """Raw DEFLATE (HTTP-Redirect binding) with a hard cap: no decompression bomb."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise _refuse("message is not valid DEFLATE data") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _refuse(f"inflated message larger than {limit} bytes")
    return out


def _malformed(position: tuple[int, int]) -> str:
    """Where, not what: a parser's message quotes the document's own tag names and text."""
    line, column = position
    return f"malformed XML (line {line}, column {column})"


def _gate(xml: bytes) -> None:
    """expat via defusedxml stops at the DOCTYPE itself, before anything is fetched or read.

    libxml2 alone would still open an external subset named by a DOCTYPE
    (`SYSTEM "/etc/passwd"`) even with DTD loading off; expat never does.
    """
    try:
        safe_etree.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise _refuse(
            "XML with a DOCTYPE or entity declaration is not accepted (DTDs are forbidden)"
        ) from None
    except safe_etree.ParseError as exc:
        raise _refuse(_malformed(exc.position)) from None


def parse(xml: bytes, limit: int = DEFAULT_LIMIT) -> etree._Element:
    """Parse untrusted XML; any DOCTYPE, entity declaration or malformation is refused."""
    if len(xml) > limit:
        raise _refuse(f"XML document larger than {limit} bytes")
    _gate(xml)
    parser = etree.XMLParser(**_PARSER_OPTIONS)
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        raise _refuse(_malformed(exc.position)) from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise _refuse("XML with a DOCTYPE is not accepted (DTDs and entities are forbidden)")
    if next(root.iter(etree.Entity), None) is not None:
        raise _refuse("XML entity references are not accepted")
    return root
