"""SAML HTTP-Artifact binding (SAML 2.0 bindings §3.6) for responses, the SP side.

The browser brings only a 44-byte artifact; the Response itself is fetched
by authgate from the IdP's ArtifactResolutionService, over SOAP, with a
signed ArtifactResolve. Everything here is checked before the Response is
handed to the same validation a POSTed one gets (`saml_validate`):

1. the artifact: strict base64, 44 bytes, type code 0x0004, and a SourceID
   that is the SHA-1 of this connection's IdP entity ID (`issuer_mismatch`);
2. the resolution endpoint: the IdP's own (metadata or `idp`), https (http
   only on loopback), TLS verified, answer size capped, time limited
   (`idp_error` when it cannot be had);
3. the ArtifactResponse: SOAP 1.1, issued by the IdP, signed with its
   metadata keys (`signature_invalid`), answering our ArtifactResolve
   (`state_mismatch`), Status Success (`idp_error`), holding one Response.

The CPU-bound parts (parsing, libxmlsec1) run from an executor.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from lxml import etree

from authgate.bodies import read_capped
from authgate.errors import ProtocolError
from authgate.protocols import xml_hardening
from authgate.protocols.saml_crypto import XmlSec, check_signature_shape
from authgate.protocols.saml_logout import soap_body
from authgate.protocols.saml_validate import check_issuer, check_status, check_unique_ids
from authgate.protocols.saml_xml import DS, SAML, SAMLP, child, children
from authgate.public_addresses import url_problem
from authgate.public_fetch import public_session

ARTIFACT_BYTES = 44
TYPE_CODE = b"\x00\x04"
# An artifact is meant to be resolved at once (bindings §3.6.5: "a few minutes" at most);
# the replay mark outlives any IdP's keeping of it.
ARTIFACT_TTL = 600.0
RESOLVE_TIMEOUT = 10.0
SOAP_TYPE = "text/xml; charset=utf-8"
SOAP_ACTION = "http://www.oasis-open.org/committees/security"
_ENVELOPE_PARTS = (SAML + "Issuer", DS + "Signature", SAMLP + "Extensions", SAMLP + "Status")


@dataclass(frozen=True, slots=True)
class Artifact:
    """A type 0x0004 artifact as received, and its parts."""

    value: str
    endpoint_index: int
    source_id: bytes
    message_handle: bytes


def source_id(entity_id: str) -> bytes:
    """The SourceID an IdP with `entity_id` puts in its artifacts (bindings §3.6.4)."""
    return hashlib.sha1(entity_id.encode()).digest()  # noqa: S324 - fixed by the SAML standard


def parse_artifact(value: str) -> Artifact:
    """Strictly: any other length, type code or base64 is refused, never guessed at."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_request", "the SAMLart is not base64") from None
    if len(raw) != ARTIFACT_BYTES:
        raise ProtocolError(
            "invalid_request", f"the SAMLart has {len(raw)} bytes, not {ARTIFACT_BYTES}"
        )
    if raw[:2] != TYPE_CODE:
        raise ProtocolError(
            "invalid_request", f"the SAMLart has type code 0x{raw[:2].hex()}, not 0x0004"
        )
    return Artifact(
        value=base64.b64encode(raw).decode(),
        endpoint_index=int.from_bytes(raw[2:4], "big"),
        source_id=raw[4:24],
        message_handle=raw[24:],
    )


def check_source(artifact: Artifact, idp_entity_id: str) -> None:
    if artifact.source_id != source_id(idp_entity_id):
        raise ProtocolError(
            "issuer_mismatch", f"the SAMLart was not issued by {idp_entity_id!r} (SourceID)"
        )


def check_endpoint_url(url: str) -> None:
    """The resolution call carries a signed request and returns an assertion: https only,
    except to a loopback address (a development or test IdP on the same host)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and _loopback(host):
        return
    raise ProtocolError(
        "idp_error", "the IdP's ArtifactResolutionService is not https (http only on loopback)"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client(
    http: aiohttp.ClientSession, public_only: bool
) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientSession]:
    return public_session(RESOLVE_TIMEOUT) if public_only else contextlib.nullcontext(http)


async def post_soap(
    http: aiohttp.ClientSession, url: str, envelope: bytes, limit: int, public_only: bool = False
) -> bytes:
    """POST one SOAP request to the IdP and read its answer, up to `limit` bytes.

    The certificate is verified as for any other IdP call (the session's
    default context); no redirect is followed: the endpoint is the one the
    IdP published. `public_only`: a setup-link holder gave the IdP side, so the
    endpoint its metadata names is reached at public addresses only
    (`public_addresses`), never inside the operator's network.
    """
    check_endpoint_url(url)
    if public_only and url_problem(url):
        raise ProtocolError(
            "idp_error", f"the ArtifactResolutionService {url_problem(url)} (setup link)"
        )
    try:
        async with (
            _client(http, public_only) as client,
            client.post(
                url,
                data=envelope,
                headers={"Content-Type": SOAP_TYPE, "SOAPAction": SOAP_ACTION},
                timeout=aiohttp.ClientTimeout(total=RESOLVE_TIMEOUT),
                allow_redirects=False,
            ) as response,
        ):
            if response.status != 200:
                raise ProtocolError(
                    "idp_error", f"the ArtifactResolutionService answered HTTP {response.status}"
                )
            body = await read_capped(response.content, limit)
    except aiohttp.ClientSSLError:
        raise ProtocolError(
            "idp_error", "the ArtifactResolutionService's TLS certificate is not trusted"
        ) from None
    except TimeoutError:
        raise ProtocolError("idp_error", "the ArtifactResolutionService timed out") from None
    except aiohttp.ClientError as exc:
        raise ProtocolError(
            "idp_error", f"the ArtifactResolutionService is unreachable ({type(exc).__name__})"
        ) from None
    if len(body) > limit:
        raise ProtocolError(
            "idp_error", f"the ArtifactResolutionService answered more than {limit} bytes"
        )
    return body


@dataclass(frozen=True, slots=True)
class ArtifactPolicy:
    """What the ArtifactResponse must be: from this IdP, to our ArtifactResolve."""

    idp_entity_id: str
    idp_certs: tuple[str, ...]
    resolve_id: str
    max_size: int


def read_artifact_response(body: bytes, policy: ArtifactPolicy, xmlsec: XmlSec) -> bytes:
    """The Response an ArtifactResponse carries, serialised for `validate_response_xml`."""
    envelope = xml_hardening.parse(body, policy.max_size)
    check_unique_ids(envelope)
    root = soap_body(envelope)
    if root.tag != SAMLP + "ArtifactResponse":
        raise ProtocolError("invalid_request", "the SOAP answer is not an ArtifactResponse")
    if root.get("Version") != "2.0" or not root.get("ID"):
        raise ProtocolError("invalid_request", "the ArtifactResponse is not SAML 2.0 with an ID")
    check_issuer(root, policy.idp_entity_id, "ArtifactResponse", required=True)
    _verify(root, policy, xmlsec)
    if root.get("InResponseTo") != policy.resolve_id:
        raise ProtocolError("state_mismatch", "the ArtifactResponse answers another request")
    check_status(root)
    content = [node for node in children(root) if node.tag not in _ENVELOPE_PARTS]
    if not content:
        raise ProtocolError(
            "idp_error", "the IdP resolved the artifact to nothing (unknown, used or expired)"
        )
    if len(content) != 1 or content[0].tag != SAMLP + "Response":
        raise ProtocolError("invalid_request", "the ArtifactResponse does not hold one Response")
    return etree.tostring(content[0])


def _verify(root: etree._Element, policy: ArtifactPolicy, xmlsec: XmlSec) -> None:
    """The ArtifactResponse must carry the IdP's signature: it vouches for the whole answer
    (the Response inside is then checked on its own, like a POSTed one)."""
    signature = child(root, DS + "Signature")
    if signature is None:
        empty = not [node for node in children(root) if node.tag not in _ENVELOPE_PARTS]
        hint = " and holds no message (the IdP did not know the artifact)" if empty else ""
        raise ProtocolError("signature_invalid", f"the ArtifactResponse is not signed{hint}")
    check_signature_shape(signature, root)
    if not xmlsec.verify(signature, policy.idp_certs):
        raise ProtocolError(
            "signature_invalid",
            "the ArtifactResponse signature does not verify with the IdP's certificates",
        )
