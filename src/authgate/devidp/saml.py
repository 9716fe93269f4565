"""The development IdP's SAML 2.0 side: pysaml2's own IdP (`saml2.server.Server`) and xmlsec1.

Nothing here builds XML by hand: requests are parsed and their signatures
checked by pysaml2, responses and assertions are built and signed by it
(RSA-SHA256, SHA-256 digests) and, for an SP whose options ask for it,
encrypted by xmlsec1 to the SP metadata's encryption certificate
(AES-256-GCM, RSA-OAEP: pysaml2's own default is Triple DES, which authgate
refuses). It knows only the service providers whose metadata it was given
(at creation, or registered later on its page), and answers only at the ACS
and SLO URLs that metadata lists. Every call may run xmlsec1: call them from
an executor.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from xml.etree import ElementTree

from lxml import etree
from saml2 import (
    BINDING_HTTP_ARTIFACT,
    BINDING_HTTP_POST,
    BINDING_HTTP_REDIRECT,
    BINDING_SOAP,
    SAMLError,
    class_name,
    saml,
)
from saml2.config import IdPConfig
from saml2.mdstore import InMemoryMetaData
from saml2.metadata import entity_descriptor
from saml2.request import AuthnRequest, LogoutRequest
from saml2.s_utils import SamlException, UnsupportedBinding, sid, success_status_factory
from saml2.saml import NAMEID_FORMAT_ENTITY, NAMEID_FORMAT_PERSISTENT, Issuer, NameID
from saml2.samlp import STATUS_AUTHN_FAILED, ArtifactResponse, Response
from saml2.server import Server
from saml2.sigver import (
    ASSERT_XPATH,
    RSA_OAEP_MGF1P,
    get_xmlsec_binary,
    make_temp,
    pre_encrypt_assertion,
    pre_encryption_part,
    pre_signature_part,
    signed_instance_factory,
)
from saml2.soap import parse_soap_enveloped_saml_artifact_resolve
from saml2.time_util import instant

from authgate.devidp.users import DevUser
from authgate.keys import generate

T = TypeVar("T")
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
PASSWORD_CLASS = "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"  # noqa: S105 - a URI
BINDINGS = {"redirect": BINDING_HTTP_REDIRECT, "post": BINDING_HTTP_POST}
KEY_BITS = 2048
ASSERTION_MINUTES = 5
SESSION_SECONDS = 8 * 3600
AES256_GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"
NAME_ID_XPATH = "/*[local-name()='EncryptedID']/*[local-name()='NameID']"
ARTIFACT_SECONDS = 60
SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"


class SamlRequestError(Exception):
    """A SAML message the development IdP refuses; the text is shown on its error page."""


class SpMetadataError(Exception):
    """SP metadata the development IdP will not trust; the text (never the input) is shown."""


@dataclass(frozen=True, slots=True)
class SpOptions:
    """How the IdP answers one SP: encryption needs an encryption certificate in its metadata."""

    encrypt_assertion: bool = False
    encrypt_name_id: bool = False

    @property
    def encrypts(self) -> bool:
        return self.encrypt_assertion or self.encrypt_name_id


@dataclass(frozen=True, slots=True)
class SpSession:
    """One SP's share of an IdP session: what a LogoutRequest to that SP must name."""

    sp_entity_id: str
    name_id: str
    session_index: str


@dataclass(frozen=True, slots=True)
class SoapCall:
    """A signed LogoutRequest in a SOAP envelope, to POST to the SP's back-channel SLO URL."""

    url: str
    request_id: str
    envelope: bytes


@dataclass(frozen=True, slots=True)
class KnownSp:
    """A trusted SP as the IdP-initiated page lists it: where it is answered, and whether it
    has a back-channel (SOAP) single logout URL."""

    entity_id: str
    acs_url: str
    soap_slo_url: str | None


@dataclass(frozen=True, slots=True)
class RegisteredSp:
    """A service provider trusted from now on; `replaced` when it was known before."""

    entity_id: str
    acs_urls: tuple[str, ...]
    replaced: bool


@dataclass(frozen=True, slots=True)
class SamlLogin:
    """A verified AuthnRequest, waiting for the person to sign in."""

    request_id: str
    sp_entity_id: str
    acs_url: str
    relay_state: str
    force_authn: bool
    artifact: bool = False


@dataclass(frozen=True, slots=True)
class SamlLogout:
    """A verified LogoutRequest from a known SP."""

    sp_entity_id: str
    name_id: str
    reply: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PostForm:
    """A message for the browser to POST to an SP endpoint; a sign-in names its SP session."""

    url: str
    fields: dict[str, str]
    session: SpSession | None = None


def _serialised(method: Callable[..., T]) -> Callable[..., T]:
    """pysaml2's Server keeps state between the steps of one call: one message at a time."""

    @functools.wraps(method)
    def locked(self: SamlIdp, *args: Any) -> T:
        with self._lock:
            return method(self, *args)

    return locked


class SamlIdp:
    """One pysaml2 IdP with a fresh RSA key, trusting the SPs whose metadata it was given."""

    def __init__(
        self,
        base_url: str,
        key_dir: Path,
        service_providers: Sequence[bytes],
        require_signed_requests: bool = True,
        sp_options: Mapping[str, SpOptions] | None = None,
    ) -> None:
        self.entity_id = base_url + "/saml/metadata"
        self.sso_url = base_url + "/saml/sso"
        self.slo_url = base_url + "/saml/slo"
        self.resolve_url = base_url + "/saml/resolve"
        key_pem, cert_pem = generate("authgate development IdP (not for production)", bits=KEY_BITS)
        key_file, cert_file = key_dir / "devidp-saml.key", key_dir / "devidp-saml.crt"
        key_file.write_bytes(key_pem)
        key_file.chmod(0o600)
        cert_file.write_bytes(cert_pem)
        config = IdPConfig().load(
            self._config(key_file, cert_file, service_providers, require_signed_requests)
        )
        self.server = Server(config=config)
        self.want_signed = require_signed_requests
        self._lock = threading.Lock()
        self._options: dict[str, SpOptions] = {}
        for entity_id, options in (sp_options or {}).items():
            self._set_options(self.server.metadata, entity_id, options)
        # artifact -> (the SP it was issued to, the signed Response, when it expires)
        self._artifacts: dict[str, tuple[str, str, float]] = {}

    def _config(
        self, key_file: Path, cert_file: Path, sps: Sequence[bytes], signed: bool
    ) -> dict[str, Any]:
        return {
            "entityid": self.entity_id,
            "xmlsec_binary": get_xmlsec_binary(),
            "key_file": str(key_file),
            "cert_file": str(cert_file),
            "signing_algorithm": RSA_SHA256,
            "digest_algorithm": SHA256,
            "accepted_time_diff": 60,
            "metadata": {"inline": [sp.decode() for sp in sps]},
            "service": {
                "idp": {
                    "name": "authgate development IdP",
                    "endpoints": {
                        "single_sign_on_service": [
                            (self.sso_url, BINDING_HTTP_REDIRECT),
                            (self.sso_url, BINDING_HTTP_POST),
                        ],
                        "single_logout_service": [
                            (self.slo_url, BINDING_HTTP_REDIRECT),
                            (self.slo_url, BINDING_HTTP_POST),
                        ],
                        "artifact_resolution_service": [(self.resolve_url, BINDING_SOAP, "0")],
                    },
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                    "want_authn_requests_signed": signed,
                    "sign_response": True,
                    "sign_assertion": True,
                    "policy": {
                        "default": {
                            "lifetime": {"minutes": ASSERTION_MINUTES},
                            "attribute_restrictions": None,
                        }
                    },
                }
            },
        }

    @_serialised
    def metadata(self) -> bytes:
        return entity_descriptor(self.server.config).to_string()

    @_serialised
    def register_sp(self, xml: str, options: SpOptions = SpOptions()) -> RegisteredSp:
        """Trust one more SP from now on; metadata for a known entity ID replaces the old."""
        candidate = _sp_metadata(self.server.metadata.attrc, xml)
        entity_id = next(iter(candidate.keys()))
        if self.want_signed and not candidate.certs(entity_id, "spsso", "signing"):
            raise SpMetadataError(
                "The SP metadata has no signing certificate, and this IdP accepts only signed"
                " AuthnRequests."
            )
        self._set_options(candidate, entity_id, options)
        replaced = False
        for source in self.server.metadata.metadata.values():
            if entity_id in source:
                del source[entity_id]
                replaced = True
        self.server.metadata.metadata[f"registered {entity_id}"] = candidate
        return RegisteredSp(entity_id, _post_acs(candidate, entity_id), replaced)

    def _parse(self, kind: str, binding: str, message: str, params: dict[str, str]) -> Any:
        """Decode, verify the signature (redirect query or XML) and schema-check one request."""
        parse = (
            self.server.parse_authn_request
            if kind == "AuthnRequest"
            else self.server.parse_logout_request
        )
        try:
            parsed = parse(
                message,
                BINDINGS[binding],
                relay_state=params.get("RelayState"),
                sigalg=params.get("SigAlg"),
                signature=params.get("Signature"),
            )
        except Exception as exc:
            raise SamlRequestError(f"the {kind} was refused: {_describe(exc)}") from None
        if parsed is None:
            raise SamlRequestError(f"the {kind} was refused: not a valid {kind}")
        issuer = parsed.message.issuer.text.strip() if parsed.message.issuer is not None else ""
        if issuer not in self.server.metadata.service_providers():
            raise SamlRequestError(f"the {kind} comes from an unknown service provider {issuer!r}")
        return parsed

    @_serialised
    def parse_login(self, binding: str, message: str, params: dict[str, str]) -> SamlLogin:
        """A known SP's AuthnRequest and its ACS: pysaml2 answers only at an ACS the SP's
        metadata lists, so a request naming any other URL is refused."""
        parsed: AuthnRequest = self._parse("AuthnRequest", binding, message, params)
        request = parsed.message
        artifact = request.protocol_binding == BINDING_HTTP_ARTIFACT
        try:
            args = self.server.response_args(
                request, [BINDING_HTTP_ARTIFACT if artifact else BINDING_HTTP_POST]
            )
        except (SAMLError, SamlException, KeyError) as exc:
            raise SamlRequestError(
                f"no ACS in the SP metadata matches this request: {_describe(exc)}"
            ) from None
        return SamlLogin(
            request_id=str(request.id),
            sp_entity_id=args["sp_entity_id"],
            acs_url=args["destination"],
            relay_state=params.get("RelayState", ""),
            force_authn=str(request.force_authn).lower() in ("true", "1"),
            artifact=artifact,
        )

    @_serialised
    def login_response(self, login: SamlLogin, user: DevUser) -> PostForm:
        """A signed Response with a signed assertion, to be POSTed to the SP's ACS."""
        identity = {
            "email": [user.email] if user.email_verified else [],
            "displayName": [user.name],
            "givenName": [user.given_name],
            "sn": [user.family_name],
            "groups": list(user.groups),
        }
        name_id = NameID(
            format=NAMEID_FORMAT_PERSISTENT,
            text=user.id,
            name_qualifier=self.entity_id,
            sp_name_qualifier=login.sp_entity_id,
        )
        response: Response = self.server.create_authn_response(
            identity={k: v for k, v in identity.items() if v},
            in_response_to=login.request_id or None,
            destination=login.acs_url,
            sp_entity_id=login.sp_entity_id,
            name_id=name_id,
            authn={"class_ref": PASSWORD_CLASS, "authn_instant": int(time.time())},
            sign_response=False,
            sign_assertion=False,
            session_not_on_or_after=_instant(time.time() + SESSION_SECONDS),
        )
        session = SpSession(
            login.sp_entity_id, user.id, str(response.assertion.authn_statement[0].session_index)
        )
        xml = self._sealed(response, login.sp_entity_id)
        if login.artifact:
            form = self._artifact_form(xml, login)
        else:
            form = _post_form(xml, login.acs_url, login.relay_state)
        return PostForm(form.url, form.fields, session)

    def _artifact_form(self, response: str, login: SamlLogin) -> PostForm:
        """HTTP-Artifact: a type 0x0004 artifact (endpoint index 0, SourceID the SHA-1 of
        this IdP's entity ID) POSTed to the SP; the Response waits for its resolution."""
        now = time.time()
        self._artifacts = {k: v for k, v in self._artifacts.items() if v[2] > now}
        source = hashlib.sha1(self.entity_id.encode()).digest()  # noqa: S324 - SAML fixes SHA-1
        raw = b"\x00\x04\x00\x00" + source + secrets.token_bytes(20)
        artifact = base64.b64encode(raw).decode()
        self._artifacts[artifact] = (login.sp_entity_id, response, now + ARTIFACT_SECONDS)
        fields = {"SAMLart": artifact}
        if login.relay_state:
            fields["RelayState"] = login.relay_state
        return PostForm(url=login.acs_url, fields=fields)

    @_serialised
    def resolve_artifact(self, body: bytes) -> bytes:
        """ArtifactResolutionService: a known SP's signed ArtifactResolve gets, once, the
        Response its artifact stands for, in a signed ArtifactResponse (SOAP)."""
        try:
            xml = parse_soap_enveloped_saml_artifact_resolve(body.decode())
            request = self.server.sec.correctly_signed_message(xml, "artifact_resolve", must=True)
        except Exception as exc:
            raise SamlRequestError(f"the ArtifactResolve was refused: {_describe(exc)}") from None
        issuer = request.issuer.text.strip() if request.issuer is not None else ""
        kept = self._artifacts.pop(request.artifact.text.strip(), None)
        if kept is None or kept[0] != issuer or kept[2] <= time.time():
            raise SamlRequestError("the artifact is unknown, used, expired or another SP's")
        answer = ArtifactResponse(
            id=sid(),
            version="2.0",
            issue_instant=instant(),
            in_response_to=request.id,
            issuer=Issuer(text=self.entity_id, format=NAMEID_FORMAT_ENTITY),
            status=success_status_factory(),
        )
        # A signature without an Id: pysaml2 numbers them, and the Response inside has its own.
        answer.signature = pre_signature_part(
            answer.id, self.server.sec.my_cert, digest_alg=SHA256, sign_alg=RSA_SHA256
        )
        root = etree.fromstring(str(answer).encode())
        root.append(etree.fromstring(kept[1].encode()))
        signed = self.server.sec.sign_statement(
            etree.tostring(root).decode(), class_name(answer), node_id=answer.id
        )
        return _soap_envelope(signed)

    @_serialised
    def cancelled_response(self, login: SamlLogin) -> PostForm:
        """A signed Responder/AuthnFailed answer: the person gave up at the IdP."""
        response = self.server.create_error_response(
            login.request_id or None,
            login.acs_url,
            info=(STATUS_AUTHN_FAILED, "the person cancelled the sign-in"),
            sign=True,
            sign_alg=RSA_SHA256,
            digest_alg=SHA256,
        )
        return _post_form(str(response), login.acs_url, login.relay_state)

    @_serialised
    def parse_logout(self, binding: str, message: str, params: dict[str, str]) -> SamlLogout:
        """A known SP's LogoutRequest, and the signed LogoutResponse that answers it."""
        parsed: LogoutRequest = self._parse("LogoutRequest", binding, message, params)
        request = parsed.message
        sp = request.issuer.text.strip()
        reply_binding = BINDINGS[binding]
        try:
            response = self.server.create_logout_response(
                request,
                [reply_binding],
                sign=reply_binding == BINDING_HTTP_POST,
                sign_alg=RSA_SHA256,
                digest_alg=SHA256,
            )
            args = self.server.response_args(request, [reply_binding], descr_type="spsso")
        except (SAMLError, SamlException, KeyError) as exc:
            raise SamlRequestError(f"the SP has no usable SLO endpoint: {_describe(exc)}") from None
        relay = params.get("RelayState", "")
        if reply_binding == BINDING_HTTP_POST:
            form = _post_form(str(response), args["destination"], relay)
            reply: dict[str, Any] = {"url": form.url, "fields": form.fields}
        else:
            info = self.server.apply_binding(
                reply_binding,
                str(response),
                args["destination"],
                relay_state=relay,
                response=True,
                sign=True,
                sigalg=RSA_SHA256,
            )
            reply = {"url": dict(info["headers"])["Location"], "fields": None}
        name_id = request.name_id.text.strip() if request.name_id is not None else ""
        return SamlLogout(sp_entity_id=sp, name_id=name_id, reply=reply)

    def _set_options(self, metadata: Any, entity_id: str, options: SpOptions) -> None:
        """Refuse encryption to an SP that publishes no encryption certificate."""
        if options.encrypts and not metadata.certs(entity_id, "spsso", "encryption"):
            raise SpMetadataError(
                "The SP metadata has no encryption certificate, so this IdP cannot encrypt to it."
            )
        self._options[entity_id] = options

    def options(self, entity_id: str) -> SpOptions:
        return self._options.get(entity_id, SpOptions())

    def _encryption_cert(self, entity_id: str) -> str:
        return str(self.server.metadata.certs(entity_id, "spsso", "encryption")[0][1])

    def _encrypt(self, xml: str, cert: str, xpath: str) -> str:
        """xmlsec1 replaces the element at `xpath` with its EncryptedData (AES-256-GCM, the
        session key wrapped by RSA-OAEP to the SP's certificate)."""
        pem = f"-----BEGIN CERTIFICATE-----\n{cert}\n-----END CERTIFICATE-----\n"
        cert_file = make_temp(pem.encode("ascii"), decode=False)
        template = pre_encryption_part(
            msg_enc=AES256_GCM, key_enc=RSA_OAEP_MGF1P, encrypt_cert=cert
        )
        return str(
            self.server.sec.encrypt_assertion(
                xml, cert_file.name, template, key_type="aes-256", node_xpath=xpath
            )
        )

    def _encrypted_id(self, name_id: NameID, cert: str) -> saml.EncryptedID:
        """The NameID declares its own namespaces before encryption (as pysaml2 does for an
        assertion), so the decrypted fragment parses on its own."""
        holder = saml.EncryptedID()
        holder.add_extension_element(name_id)
        tree = holder._to_element_tree()
        inner = tree.find(f"{{{saml.NAMESPACE}}}{NameID.c_tag}")
        holder.set_prefixes(inner, holder.get_prefix_map([inner]))
        xml = ElementTree.tostring(tree, encoding="UTF-8").decode("utf-8")
        return saml.encrypted_id_from_string(self._encrypt(xml, cert, NAME_ID_XPATH))

    def _sealed(self, response: Response, sp_entity_id: str) -> str:
        """Sign the assertion (its NameID already encrypted, if the SP asks), encrypt it (if
        asked), then sign the Response: the order in which an SP undoes them."""
        sec = self.server.sec
        assertion = response.assertion
        options = self.options(sp_entity_id)
        cert = self._encryption_cert(sp_entity_id) if options.encrypts else ""
        if options.encrypt_name_id:
            assertion.subject.encrypted_id = self._encrypted_id(assertion.subject.name_id, cert)
            assertion.subject.name_id = None
        response.signature = pre_signature_part(
            response.id, sec.my_cert, 1, sign_alg=RSA_SHA256, digest_alg=SHA256
        )
        assertion.signature = pre_signature_part(
            assertion.id, sec.my_cert, 2, sign_alg=RSA_SHA256, digest_alg=SHA256
        )
        signed_assertion = [(class_name(assertion), assertion.id)]
        signed_response = [(class_name(response), response.id)]
        if not options.encrypt_assertion:
            return str(signed_instance_factory(response, sec, signed_assertion + signed_response))
        tag = f"{{{saml.NAMESPACE}}}{saml.Assertion.c_tag}"
        wrapped = pre_encrypt_assertion(response)
        xml = wrapped.get_xml_string_with_self_contained_assertion_within_encrypted_assertion(tag)
        xml = signed_instance_factory(xml, sec, signed_assertion)
        xml = self._encrypt(xml, cert, ASSERT_XPATH)
        return str(signed_instance_factory(xml, sec, signed_response))

    @_serialised
    def known_sps(self) -> list[KnownSp]:
        metadata = self.server.metadata
        return [
            KnownSp(entity_id, acs[0], self._soap_slo(entity_id))
            for entity_id in sorted(metadata.service_providers())
            if (acs := _post_acs(metadata, entity_id))
        ]

    @_serialised
    def unsolicited_login(self, sp_entity_id: str, relay_state: str) -> SamlLogin:
        """IdP-initiated sign-in: no AuthnRequest, so no InResponseTo, answered at the SP's
        first HTTP-POST ACS; the SP decides whether it takes unsolicited responses."""
        metadata = self.server.metadata
        known = sp_entity_id in metadata.service_providers()
        acs = _post_acs(metadata, sp_entity_id) if known else ()
        if not acs:
            raise SamlRequestError("this IdP knows no such service provider")
        return SamlLogin(
            request_id="",
            sp_entity_id=sp_entity_id,
            acs_url=acs[0],
            relay_state=relay_state,
            force_authn=False,
        )

    def _soap_slo(self, entity_id: str) -> str | None:
        """The SP's SOAP SingleLogoutService; pysaml2 raises when a known SP lists none."""
        try:
            soap = self.server.metadata.service(
                entity_id, "spsso_descriptor", "single_logout_service", BINDING_SOAP
            )
        except UnsupportedBinding:
            return None
        return str(soap[0]["location"]) if soap else None

    @_serialised
    def soap_logout_request(self, session: SpSession) -> SoapCall | None:
        """A signed LogoutRequest naming the NameID and SessionIndex the SP was given, in a
        SOAP envelope; None when the SP's metadata has no SOAP SingleLogoutService."""
        url = self._soap_slo(session.sp_entity_id)
        if url is None:
            return None
        name_id = NameID(
            format=NAMEID_FORMAT_PERSISTENT,
            text=session.name_id,
            name_qualifier=self.entity_id,
            sp_name_qualifier=session.sp_entity_id,
        )
        request_id, request = self.server.create_logout_request(
            url,
            session.sp_entity_id,
            name_id=name_id,
            session_indexes=[session.session_index],
            expire=_instant(time.time() + ASSERTION_MINUTES * 60),
            sign=True,
            sign_alg=RSA_SHA256,
            digest_alg=SHA256,
        )
        info = self.server.apply_binding(BINDING_SOAP, str(request), url, sign=False)
        return SoapCall(url=url, request_id=request_id, envelope=str(info["data"]).encode())

    @_serialised
    def soap_logout_status(self, call: SoapCall, body: bytes) -> str:
        """The status of the SP's LogoutResponse to `call`, its signature checked by pysaml2
        against the SP's metadata; a response to another request is refused."""
        try:
            parsed = self.server.parse_logout_request_response(body.decode(), BINDING_SOAP)
        except Exception as exc:
            raise SamlRequestError(f"the LogoutResponse was refused: {_describe(exc)}") from None
        if parsed is None:
            raise SamlRequestError("the answer holds no LogoutResponse")
        message = parsed.response
        if message.in_response_to != call.request_id:
            raise SamlRequestError("the LogoutResponse answers another request")
        return str(message.status.status_code.value)


def _sp_metadata(attributes: Any, xml: str) -> InMemoryMetaData:
    """Exactly one SAML 2.0 SP with an ACS, parsed (defusedxml) apart from the trusted store."""
    candidate = InMemoryMetaData(attributes, xml)
    try:
        candidate.load()
    except Exception:
        raise SpMetadataError("This is not SAML metadata: it does not parse as XML.") from None
    if candidate.to_old:
        raise SpMetadataError("The metadata's validUntil has passed.")
    sps = [key for key, entity in candidate.items() if "spsso_descriptor" in entity]
    if len(sps) != 1 or len(candidate) != 1:
        raise SpMetadataError(
            "The metadata must describe exactly one SAML 2.0 service provider"
            " (an EntityDescriptor with an SPSSODescriptor)."
        )
    if not _post_acs(candidate, sps[0]):
        raise SpMetadataError(
            "The SP metadata lists no AssertionConsumerService with the HTTP-POST binding,"
            " the only one this IdP answers with."
        )
    return candidate


def _post_acs(metadata: InMemoryMetaData, entity_id: str) -> tuple[str, ...]:
    services = metadata.service(entity_id, "spsso_descriptor", "assertion_consumer_service")
    return tuple(srv["location"] for srv in (services or {}).get(BINDING_HTTP_POST, []))


def _post_form(xml: str, url: str, relay_state: str) -> PostForm:
    """HTTP-POST binding: the base64 message (and RelayState) for our own auto-submit page."""
    fields = {"SAMLResponse": base64.b64encode(xml.encode()).decode()}
    if relay_state:
        fields["RelayState"] = relay_state
    return PostForm(url=url, fields=fields)


def _soap_envelope(message: str) -> bytes:
    envelope = etree.Element(f"{{{SOAP_ENV_NS}}}Envelope", nsmap={"SOAP-ENV": SOAP_ENV_NS})
    body = etree.SubElement(envelope, f"{{{SOAP_ENV_NS}}}Body")
    body.append(etree.fromstring(message.encode()))
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def _instant(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
