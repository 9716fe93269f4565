"""IdP metadata: parsed from a file, a URL or hand-given values into one small record.

Metadata is read with the hardened parser and only the parts an SP needs
are kept (entity ID, SSO/SLO endpoints, signing certificates, validity), so
extension content such as Entra ID's WS-Federation `RoleDescriptor`s is
ignored instead of being schema-validated. Expired metadata is an error
naming the expiry, never an empty set of IdPs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lxml import etree

from authgate.errors import OperatorError, ProtocolError
from authgate.protocols import xml_hardening
from authgate.protocols.saml_crypto import XmlSec, check_signature_shape
from authgate.protocols.saml_xml import (
    BINDING_POST,
    BINDING_REDIRECT,
    BINDING_SOAP,
    DS,
    MD,
    PROTOCOL,
    child,
    children,
    iso,
    parse_instant,
)
from authgate.settings import SamlIdp

MAX_METADATA_BYTES = 5 * 1024 * 1024
_SHORT_BINDING = {BINDING_REDIRECT: "redirect", BINDING_POST: "post"}


class MetadataError(OperatorError):
    """Metadata that cannot be used, worded for the operator.

    `summary` is the short phrase readiness may show; the message can quote the
    document (entity IDs) and name URLs, so it goes to the log and the CLI only.
    """

    def __init__(self, message: str, summary: str = "unusable metadata") -> None:
        super().__init__(message)
        self.summary = summary


def pretty_xml(document: bytes) -> bytes:
    """A metadata document indented two spaces a level, as IdPs' metadata downloads are.

    Only whitespace between elements changes, which means nothing in metadata,
    and an operator can read and diff what they upload. A signed document must
    be indented before it is signed, never after: the whitespace inside the
    signed element is part of what its signature covers.
    """
    root = xml_hardening.parse(document, MAX_METADATA_BYTES)
    etree.indent(root, space="  ")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


@dataclass(frozen=True, slots=True)
class IdpMetadata:
    """What authgate needs to know about one IdP, whatever the source."""

    entity_id: str
    sso: dict[str, str]
    signing_certs: tuple[str, ...]
    slo: dict[str, tuple[str, str]] = field(default_factory=dict)
    valid_until: float | None = None
    want_authn_requests_signed: bool = False
    # ArtifactResolutionService locations (SOAP binding) by endpoint index.
    artifact_resolution: dict[int, str] = field(default_factory=dict)

    def sso_endpoint(self) -> tuple[str, str]:
        """(binding, URL): HTTP-Redirect when offered, else HTTP-POST."""
        for binding in ("redirect", "post"):
            if binding in self.sso:
                return binding, self.sso[binding]
        raise MetadataError(f"IdP {self.entity_id} offers no HTTP-Redirect or HTTP-POST SSO")

    def slo_endpoint(self) -> tuple[str, str, str] | None:
        """(binding, location, response location) of single logout, if the IdP has one."""
        for binding in ("redirect", "post"):
            if binding in self.slo:
                return (binding, *self.slo[binding])
        return None

    def artifact_resolution_url(self, index: int) -> str:
        """Where an artifact naming endpoint `index` is resolved; the IdP must publish it."""
        url = self.artifact_resolution.get(index)
        if url is None:
            raise ProtocolError(
                "invalid_request",
                f"the IdP {self.entity_id} publishes no ArtifactResolutionService {index}",
            )
        return url

    def expired(self, now: float) -> bool:
        return self.valid_until is not None and now >= self.valid_until


def _certificates(role: etree._Element) -> tuple[str, ...]:
    certs: list[str] = []
    for descriptor in children(role, MD + "KeyDescriptor"):
        if descriptor.get("use", "signing") != "signing":
            continue
        for node in descriptor.iter(DS + "X509Certificate"):
            cert = "".join((node.text or "").split())
            if cert and cert not in certs:
                certs.append(cert)
    return tuple(certs)


def _endpoints(role: etree._Element, tag: str) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for service in children(role, MD + tag):
        short = _SHORT_BINDING.get(service.get("Binding", ""))
        location = service.get("Location")
        if short and location and short not in found:
            found[short] = (location, service.get("ResponseLocation") or location)
    return found


def _artifact_resolution(role: etree._Element) -> dict[int, str]:
    found: dict[int, str] = {}
    for service in children(role, MD + "ArtifactResolutionService"):
        index, location = service.get("index", ""), service.get("Location")
        if service.get("Binding") == BINDING_SOAP and index.isdigit() and location:
            found.setdefault(int(index), location)
    return found


def _valid_until(nodes: list[etree._Element], now: float) -> float | None:
    limits = [parse_instant(n.get("validUntil"), "validUntil") for n in nodes]
    known = [t for t in limits if t is not None]
    if not known:
        return None
    earliest = min(known)
    if now >= earliest:
        raise MetadataError(
            f"IdP metadata expired at {iso(earliest)} (validUntil); fetch a new copy",
            summary=f"expired at {iso(earliest)} (validUntil)",
        )
    return earliest


def _idp_entities(root: etree._Element) -> list[etree._Element]:
    if root.tag == MD + "EntityDescriptor":
        entities = [root]
    elif root.tag == MD + "EntitiesDescriptor":
        entities = list(root.iter(MD + "EntityDescriptor"))
    else:
        raise MetadataError("not SAML metadata (expected EntityDescriptor or EntitiesDescriptor)")
    return [e for e in entities if _idp_role(e) is not None]


def _idp_role(entity: etree._Element) -> etree._Element | None:
    for role in children(entity, MD + "IDPSSODescriptor"):
        if PROTOCOL in (role.get("protocolSupportEnumeration") or "").split():
            return role
    return None


def _choose(entities: list[etree._Element], entity_id: str | None) -> etree._Element:
    ids = [e.get("entityID", "") for e in entities]
    if not entities:
        raise MetadataError("the metadata describes no SAML 2.0 identity provider")
    if entity_id is not None:
        if entity_id not in ids:
            raise MetadataError(f"IdP {entity_id} is not in the metadata (found: {', '.join(ids)})")
        return entities[ids.index(entity_id)]
    if len(entities) > 1:
        raise MetadataError(f"the metadata holds several IdPs; set idp_entity_id to one of {ids}")
    return entities[0]


def verify_metadata_signature(root: etree._Element, certs: Sequence[str], xmlsec: XmlSec) -> None:
    """The whole document must carry a valid enveloped signature by one of `certs` (several
    during the federation's signing-key rollover: the current and the next)."""
    signature = child(root, DS + "Signature")
    if signature is None:
        raise MetadataError(
            "the metadata is not signed, but a signing certificate is configured",
            summary="not signed",
        )
    try:
        check_signature_shape(signature, root, after=None)
    except ProtocolError as exc:
        raise MetadataError(
            f"metadata signature refused: {exc.detail}", summary="signature refused"
        ) from None
    if not xmlsec.verify(signature, list(certs)):
        raise MetadataError(
            "the metadata signature does not verify with any configured certificate",
            summary="signature invalid",
        )


def parse_idp_metadata(
    xml: bytes,
    *,
    entity_id: str | None = None,
    signing_certs: Sequence[str] = (),
    xmlsec: XmlSec | None = None,
    now: float | None = None,
) -> IdpMetadata:
    """Parse, optionally signature-check, and reduce metadata to one `IdpMetadata`."""
    now = time.time() if now is None else now
    try:
        root = xml_hardening.parse(xml, MAX_METADATA_BYTES)
    except ProtocolError as exc:
        raise MetadataError(f"unreadable metadata: {exc.detail}") from None
    if signing_certs:
        verify_metadata_signature(root, signing_certs, xmlsec or XmlSec())
    entity = _choose(_idp_entities(root), entity_id)
    role = _idp_role(entity)
    assert role is not None
    try:
        valid_until = _valid_until([root, entity, role], now)
    except ProtocolError as exc:
        raise MetadataError(exc.detail) from None
    certs = _certificates(role)
    if not certs:
        raise MetadataError(f"IdP {entity.get('entityID')} lists no signing certificate")
    sso = {b: loc for b, (loc, _) in _endpoints(role, "SingleSignOnService").items()}
    if not sso:
        raise MetadataError("the IdP offers no HTTP-Redirect or HTTP-POST SingleSignOnService")
    return IdpMetadata(
        entity_id=entity.get("entityID", ""),
        sso=sso,
        signing_certs=certs,
        slo=_endpoints(role, "SingleLogoutService"),
        valid_until=valid_until,
        want_authn_requests_signed=role.get("WantAuthnRequestsSigned") in ("true", "1"),
        artifact_resolution=_artifact_resolution(role),
    )


def manual_metadata(idp: SamlIdp) -> IdpMetadata:
    """IdP details given by hand in the config."""
    slo = {idp.slo_binding: (idp.slo_url, idp.slo_url)} if idp.slo_url else {}
    return IdpMetadata(
        entity_id=idp.entity_id,
        sso={idp.sso_binding: idp.sso_url},
        signing_certs=tuple(dict.fromkeys(idp.all_certificates)),
        slo=slo,
        artifact_resolution={0: idp.artifact_resolution_url} if idp.artifact_resolution_url else {},
    )
