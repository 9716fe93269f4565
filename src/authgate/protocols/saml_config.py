"""pysaml2's SP configuration, built from authgate settings (never from a user's pysaml2 dict).

pysaml2 is used for what it does well and what is sent, not received: the
SP metadata document and the AuthnRequest / LogoutRequest / LogoutResponse
messages with their bindings and signatures. Everything received is
validated by authgate's own modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from saml2 import (
    BINDING_HTTP_ARTIFACT,
    BINDING_HTTP_POST,
    BINDING_HTTP_REDIRECT,
    BINDING_SOAP,
    md,
    xmldsig,
)
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.extension import algsupport
from saml2.metadata import entity_descriptor
from saml2.sigver import get_xmlsec_binary

from authgate.protocols.saml_crypto import DIGESTS, RSA_SHA256, SHA256, SIGNATURE_HASHES
from authgate.protocols.saml_metadata import pretty_xml
from authgate.protocols.saml_xml import NAMEID_FORMATS
from authgate.settings import SamlConnection, Settings

# The prefixes IdPs' own metadata uses, instead of pysaml2's ns0, ns1, ...
PREFIXES = {"md": md.NAMESPACE, "ds": xmldsig.NAMESPACE, "alg": algsupport.NAMESPACE}


@dataclass(frozen=True, slots=True)
class SpEndpoints:
    """This SP's own identity and URLs for one connection."""

    entity_id: str
    acs_urls: tuple[str, ...]
    slo_url: str
    soap_slo_url: str
    metadata_url: str

    @classmethod
    def build(cls, conn: SamlConnection, settings: Settings) -> SpEndpoints:
        """The default URLs under the prefix, or the ones a vendor document fixes."""
        base = f"{settings.public_url}{settings.prefix}/saml/{conn.id}"

        def url(given: str | None, default: str) -> str:
            return absolute(settings.public_url, given) if given else default

        return cls(
            entity_id=conn.sp_entity_id or base,
            acs_urls=tuple(absolute(settings.public_url, u) for u in conn.acs_urls)
            or (base + "/acs",),
            slo_url=url(conn.slo_path, base + "/slo"),
            soap_slo_url=base + "/slo/soap",
            metadata_url=url(conn.metadata_path, base + "/metadata"),
        )

    @property
    def acs_url(self) -> str:
        """Where AuthnRequests ask the response to go (the first ACS URL)."""
        return self.acs_urls[0]

    def acs_for(self, path: str) -> str:
        """The ACS URL a response posted to `path` must name as its Destination/Recipient."""
        return next((u for u in self.acs_urls if urlsplit(u).path == path), self.acs_url)


def absolute(public_url: str, given: str) -> str:
    """A configured endpoint: a path on authgate's public URL, or a whole URL as given."""
    return public_url + given if given.startswith("/") else given


def decryption_keys(conn: SamlConnection) -> tuple[Path, ...]:
    return tuple(k.key_file for k in conn.encryption_keys)


def sp_config(conn: SamlConnection, sp: SpEndpoints) -> SPConfig:
    """The pysaml2 configuration of one connection's SP."""
    acs = [(url, BINDING_HTTP_POST) for url in sp.acs_urls]
    if conn.response_binding == "artifact":
        acs += [(url, BINDING_HTTP_ARTIFACT) for url in sp.acs_urls]
    endpoints: dict[str, list[tuple[str, str]]] = {"assertion_consumer_service": acs}
    if conn.slo:
        endpoints["single_logout_service"] = [
            (sp.slo_url, BINDING_HTTP_REDIRECT),
            (sp.slo_url, BINDING_HTTP_POST),
            (sp.soap_slo_url, BINDING_SOAP),
        ]
    config: dict[str, object] = {
        "entityid": sp.entity_id,
        "xmlsec_binary": get_xmlsec_binary(),
        "signing_algorithm": RSA_SHA256,
        "digest_algorithm": SHA256,
        "service": {
            "sp": {
                "endpoints": endpoints,
                "name_id_format": [NAMEID_FORMATS[conn.name_id_format]],
                "authn_requests_signed": conn.sign_requests,
                "want_assertions_signed": conn.want_assertions_signed,
                "want_response_signed": conn.want_response_signed,
                "allow_unsolicited": conn.allow_idp_initiated,
            }
        },
    }
    signing = conn.signing_keys
    if signing:
        config["key_file"] = str(signing[0].key_file)
        config["cert_file"] = str(signing[0].cert_file)
        config["additional_cert_files"] = [str(k.cert_file) for k in signing[1:]]
    if conn.encryption_keys:
        config["encryption_keypairs"] = [
            {"key_file": str(k.key_file), "cert_file": str(k.cert_file)}
            for k in conn.encryption_keys
        ]
    return SPConfig().load(config)


def response_binding(conn: SamlConnection) -> str:
    """The AuthnRequest's ProtocolBinding: how the IdP is asked to answer."""
    return BINDING_HTTP_ARTIFACT if conn.response_binding == "artifact" else BINDING_HTTP_POST


def client(config: SPConfig) -> Saml2Client:
    return Saml2Client(config=config)


def sp_metadata(config: SPConfig) -> bytes:
    """SP metadata advertising only the algorithms authgate accepts (pysaml2 lists SHA-1, MD5).

    Indented, with the usual prefixes, like an IdP's download; the same bytes
    are served at the metadata URL and printed by `authgate metadata`.
    """
    descriptor = entity_descriptor(config)
    descriptor.extensions = md.Extensions()
    for element in _algorithms():
        descriptor.extensions.add_extension_element(element)
    return pretty_xml(descriptor.to_string(nspair=PREFIXES))


def _algorithms() -> list[algsupport.DigestMethod | algsupport.SigningMethod]:
    return [
        *(algsupport.DigestMethod(algorithm=a) for a in sorted(DIGESTS)),
        *(algsupport.SigningMethod(algorithm=a) for a in sorted(SIGNATURE_HASHES)),
    ]
