"""The SAML 2.0 service provider of one connection.

Sending (AuthnRequest, LogoutRequest, LogoutResponse, SP metadata) uses
pysaml2; receiving is validated by authgate's own modules, with libxmlsec1
in-process. Everything that verifies, decrypts, signs (pysaml2 still runs the
xmlsec1 program to sign POST-binding messages) or builds pysaml2 objects goes
to an executor, never the event loop. What leaves this module is plain data and an `Identity`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from saml2 import BINDING_HTTP_REDIRECT, samlp
from saml2.client import Saml2Client
from saml2.s_utils import sid, success_status_factory
from saml2.saml import NAMEID_FORMAT_ENTITY, Issuer, NameID
from saml2.time_util import instant

from authgate.errors import LoginStateError, ProtocolError
from authgate.identity import Identity
from authgate.protocols.base import Protocol, ProtocolContext
from authgate.protocols.saml_artifact import (
    ARTIFACT_TTL,
    ArtifactPolicy,
    check_source,
    parse_artifact,
    post_soap,
    read_artifact_response,
)
from authgate.protocols.saml_attributes import to_identity
from authgate.protocols.saml_config import (
    SpEndpoints,
    client,
    decryption_keys,
    response_binding,
    sp_config,
    sp_metadata,
)
from authgate.protocols.saml_crypto import RSA_SHA256, SHA256, XmlSec, describe
from authgate.protocols.saml_logout import (
    IncomingMessage,
    LogoutPolicy,
    LogoutRequestData,
    LogoutResponseData,
    read_logout_request,
    read_logout_response,
    soap_envelope,
    soap_message,
)
from authgate.protocols.saml_metadata import IdpMetadata
from authgate.protocols.saml_source import MetadataSource
from authgate.protocols.saml_validate import (
    AcsPolicy,
    AssertionData,
    validate_response,
    validate_response_xml,
)
from authgate.protocols.saml_xml import NAMEID_FORMATS
from authgate.session.sessions import Session
from authgate.settings import SamlConnection

T = TypeVar("T")
MAX_RELAY_STATE = 80


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message for the browser to carry to the IdP: a redirect, or an auto-POST form."""

    url: str
    fields: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class LoginStart:
    request_id: str
    idp: str
    outgoing: Outgoing


class SamlProtocol(Protocol):
    conn: SamlConnection

    def __init__(self, conn: SamlConnection, ctx: ProtocolContext) -> None:
        super().__init__(conn, ctx)
        self.sp = SpEndpoints.build(conn, ctx.settings)
        self.xmlsec = XmlSec()
        self.metadata = MetadataSource(conn, ctx.http, ctx.kv, self.xmlsec)
        self._client: Saml2Client | None = None
        self._sp_metadata: bytes | None = None
        self._lock = threading.Lock()
        self._checks = ThreadPoolExecutor(1, thread_name_prefix=f"saml-{conn.id}-checks")

    async def start(self) -> None:
        await self.metadata.start()

    async def stop(self) -> None:
        await self.metadata.stop()
        self._checks.shutdown(wait=False, cancel_futures=True)

    def readiness_problem(self) -> str | None:
        return self.metadata.problem()

    async def _blocking(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, partial(func, *args))

    async def _check(self, func: Callable[..., T], *args: Any) -> T:
        """Checks of a received message (CPU: parsing, libxmlsec1) on this connection's thread.

        One thread rather than the shared pool: during a login storm, several
        threads contending for the GIL delay the event loop about twice as
        long as one does (measured by bench/saml_acs.py).
        """
        return await asyncio.get_running_loop().run_in_executor(self._checks, partial(func, *args))

    def _saml2(self) -> Saml2Client:
        """pysaml2's client, built on first use (it runs xmlsec1 to probe the binary)."""
        with self._lock:
            if self._client is None:
                self._client = client(sp_config(self.conn, self.sp))
            return self._client

    async def sp_metadata(self) -> bytes:
        if self._sp_metadata is None:
            self._sp_metadata = await self._blocking(lambda: sp_metadata(self._saml2().config))
        return self._sp_metadata

    @property
    def _signs(self) -> bool:
        return bool(self.conn.signing_keys)

    async def begin_login(self, return_to: str) -> LoginStart:
        """An AuthnRequest to the IdP, by HTTP-Redirect when offered, else HTTP-POST."""
        idp = await self.metadata.require()
        binding, url = idp.sso_endpoint()
        sign = self._signs and (self.conn.sign_requests or idp.want_authn_requests_signed)
        relay = return_to if len(return_to) <= MAX_RELAY_STATE else None
        return await self._blocking(self._authn_request, idp, binding, url, sign, relay)

    def _authn_request(
        self, idp: IdpMetadata, binding: str, url: str, sign: bool, relay: str | None
    ) -> LoginStart:
        saml2 = self._saml2()
        request_id, request = saml2.create_authn_request(
            url,
            binding=response_binding(self.conn),
            nameid_format=NAMEID_FORMATS[self.conn.name_id_format],
            allow_create="true",
            sign=sign and binding == "post",
            sign_alg=RSA_SHA256,
            digest_alg=SHA256,
        )
        outgoing = self._outgoing(str(request), binding, url, relay, sign, "SAMLRequest")
        return LoginStart(request_id=request_id, idp=idp.entity_id, outgoing=outgoing)

    def _outgoing(
        self, xml: str, binding: str, url: str, relay: str | None, sign: bool, kind: str
    ) -> Outgoing:
        if binding == "post":
            fields = {kind: base64.b64encode(xml.encode()).decode()}
            if relay:
                fields["RelayState"] = relay
            return Outgoing(url=url, fields=fields)
        info = self._saml2().apply_binding(
            BINDING_HTTP_REDIRECT,
            xml,
            url,
            relay_state=relay or "",
            response=kind == "SAMLResponse",
            sign=sign,
            sigalg=RSA_SHA256,
        )
        return Outgoing(url=dict(info["headers"])["Location"])

    def acs_policy(self, idp: IdpMetadata, path: str | None = None) -> AcsPolicy:
        """What a response must be; `path`: where it was posted (one of several ACS URLs)."""
        return AcsPolicy(
            idp_entity_id=idp.entity_id,
            idp_certs=idp.signing_certs,
            sp_entity_id=self.sp.entity_id,
            acs_url=self.sp.acs_for(path) if path else self.sp.acs_url,
            decryption_keys=decryption_keys(self.conn),
            want_assertions_signed=self.conn.want_assertions_signed,
            want_response_signed=self.conn.want_response_signed,
            clock_skew=self.conn.clock_skew,
            max_size=self.conn.max_response_size,
        )

    async def consume_response(
        self, saml_response: str, now: float | None = None, path: str | None = None
    ) -> AssertionData:
        """Validate a posted SAMLResponse and claim its assertion ID in the shared replay cache."""
        idp = await self.metadata.require()
        now = time.time() if now is None else now
        policy = self.acs_policy(idp, path)
        data = await self._check(validate_response, saml_response, policy, self.xmlsec, now)
        return await self._claim(data, now)

    async def consume_artifact(
        self, saml_art: str, now: float | None = None, path: str | None = None
    ) -> AssertionData:
        """HTTP-Artifact: resolve a SAMLart at the IdP (once, across all replicas), then
        validate the Response it stands for exactly as a POSTed one."""
        if self.conn.response_binding != "artifact":
            raise ProtocolError(
                "invalid_request", "this connection takes POSTed responses (response_binding)"
            )
        idp = await self.metadata.require()
        artifact = parse_artifact(saml_art)
        check_source(artifact, idp.entity_id)
        url = idp.artifact_resolution_url(artifact.endpoint_index)
        replay = self.ctx.replay
        if not await replay.first_use("saml-art:" + idp.entity_id, artifact.value, ARTIFACT_TTL):
            raise ProtocolError("replayed", "this SAMLart was already used")
        resolve_id, envelope = await self._blocking(self._artifact_resolve, artifact.value, url)
        limit = self.conn.max_response_size * 2
        public_only = self.conn.idp_metadata_public_only
        answer = await post_soap(self.ctx.http, url, envelope, limit, public_only)
        artifact_policy = ArtifactPolicy(idp.entity_id, idp.signing_certs, resolve_id, limit)
        xml = await self._check(read_artifact_response, answer, artifact_policy, self.xmlsec)
        now = time.time() if now is None else now
        policy = self.acs_policy(idp, path)
        data = await self._check(validate_response_xml, xml, policy, self.xmlsec, now)
        return await self._claim(data, now)

    def _artifact_resolve(self, artifact: str, url: str) -> tuple[str, bytes]:
        """Our signed ArtifactResolve (settings require a signing key) in a SOAP envelope."""
        resolve_id, request = self._saml2().create_artifact_resolve(
            artifact, url, sid(), sign=True, sign_alg=RSA_SHA256, digest_alg=SHA256
        )
        return resolve_id, soap_envelope(str(request).encode())

    async def _claim(self, data: AssertionData, now: float) -> AssertionData:
        """Claim the assertion ID in the shared replay cache, for as long as it is valid."""
        ttl = data.not_on_or_after + self.conn.clock_skew - now
        if not await self.ctx.replay.first_use("saml:" + data.issuer, data.assertion_id, ttl):
            raise ProtocolError("replayed", f"assertion {data.assertion_id} was already used")
        return data

    def check_unsolicited(self, data: AssertionData) -> None:
        if data.in_response_to is None and not self.conn.allow_idp_initiated:
            raise LoginStateError(
                "state_mismatch",
                "unsolicited response: IdP-initiated sign-in is off for this connection"
                " (allow_idp_initiated)",
            )

    def identity(self, data: AssertionData) -> Identity:
        return to_identity(self.conn.id, data, self.conn.attributes, self.conn.link_key)

    def _logout_policy(self, idp: IdpMetadata) -> LogoutPolicy:
        return LogoutPolicy(
            idp_entity_id=idp.entity_id,
            idp_certs=idp.signing_certs,
            slo_url=self.sp.slo_url,
            soap_url=self.sp.soap_slo_url,
            clock_skew=self.conn.clock_skew,
            max_size=self.conn.max_response_size,
        )

    async def logout_url(self, session: Session, return_to: str | None) -> str | None:
        """SP-initiated SLO: a LogoutRequest for the session's NameID and SessionIndex.

        `return_to` travels as RelayState, which the IdP echoes in its LogoutResponse.
        """
        data = session.protocol_data
        idp = self.metadata.current
        endpoint = idp.slo_endpoint() if idp is not None else None
        if not (self.conn.slo and endpoint and data.get("name_id")):
            return None
        assert idp is not None and endpoint is not None
        binding, url, _ = endpoint
        relay = return_to if return_to and len(return_to) <= MAX_RELAY_STATE else None
        request_id, outgoing = await self._blocking(self._logout_request, data, binding, url, relay)
        await self.ctx.kv.set(
            "saml-logout:" + request_id,
            json.dumps(
                {"conn": self.conn.id, "fields": outgoing.fields, "url": outgoing.url}
            ).encode(),
            self.ctx.settings.session.login_state_ttl,
        )
        if outgoing.fields is None:
            return outgoing.url
        return self.ctx.settings.prefix + f"/saml/{self.conn.id}/slo?send={request_id}"

    def _logout_request(
        self, data: dict[str, Any], binding: str, url: str, relay: str | None
    ) -> tuple[str, Outgoing]:
        name_id = NameID(
            text=data["name_id"],
            format=data.get("name_id_format"),
            name_qualifier=data.get("name_qualifier"),
            sp_name_qualifier=data.get("sp_name_qualifier"),
        )
        index = [data["session_index"]] if data.get("session_index") else None
        request_id, request = self._saml2().create_logout_request(
            url,
            data.get("idp"),
            name_id=name_id,
            session_indexes=index,
            sign=self._signs and binding == "post",
            sign_alg=RSA_SHA256,
            digest_alg=SHA256,
        )
        return request_id, self._outgoing(
            str(request), binding, url, relay, self._signs, "SAMLRequest"
        )

    async def pending_logout_form(self, request_id: str) -> Outgoing | None:
        """The stored auto-POST LogoutRequest of an SP-initiated logout (POST-only IdPs)."""
        raw = await self.ctx.kv.get("saml-logout:" + request_id)
        stored = json.loads(raw) if raw else None
        if not stored or stored["conn"] != self.conn.id or stored["fields"] is None:
            return None
        return Outgoing(url=stored["url"], fields=stored["fields"])

    async def logout_request(
        self, msg: IncomingMessage, now: float | None = None
    ) -> tuple[LogoutRequestData, Outgoing | None]:
        """IdP-initiated SLO: a verified LogoutRequest and the LogoutResponse to send back."""
        idp, data = await self._verified_logout_request(msg, now)
        endpoint = idp.slo_endpoint()
        if endpoint is None:
            return data, None
        binding, _, response_url = endpoint
        reply = await self._blocking(self._logout_response, data, binding, response_url)
        return data, reply

    async def soap_logout_request(
        self, body: bytes, now: float | None = None
    ) -> tuple[LogoutRequestData, bytes]:
        """Back-channel SLO (SOAP binding): the IdP's server posts a signed LogoutRequest and
        gets the SOAP envelope of our LogoutResponse (signed when the SP has a signing key)."""
        _, data = await self._verified_logout_request(soap_message(body), now)
        return data, await self._blocking(self._soap_logout_response, data)

    async def _verified_logout_request(
        self, msg: IncomingMessage, now: float | None
    ) -> tuple[IdpMetadata, LogoutRequestData]:
        """A signed, current LogoutRequest from the IdP, claimed once across all replicas."""
        idp = await self.metadata.require()
        now = time.time() if now is None else now
        data = await self._check(
            read_logout_request, msg, self._logout_policy(idp), self.xmlsec, now
        )
        if not await self.ctx.replay.first_use("saml-slo:" + idp.entity_id, data.request_id, 600):
            raise ProtocolError("replayed", f"LogoutRequest {data.request_id} was already used")
        return idp, data

    def _success(self, data: LogoutRequestData, destination: str | None) -> samlp.LogoutResponse:
        return samlp.LogoutResponse(
            id=sid(),
            version="2.0",
            issue_instant=instant(),
            destination=destination,
            in_response_to=data.request_id,
            issuer=Issuer(text=self.sp.entity_id, format=NAMEID_FORMAT_ENTITY),
            status=success_status_factory(),
        )

    def _logout_response(self, data: LogoutRequestData, binding: str, url: str) -> Outgoing:
        response = self._success(data, url)
        xml = str(response)
        if binding == "post" and self._signs:
            xml = self._saml2().sign(response, sign_alg=RSA_SHA256, digest_alg=SHA256)
        return self._outgoing(xml, binding, url, data.relay_state, self._signs, "SAMLResponse")

    def _soap_logout_response(self, data: LogoutRequestData) -> bytes:
        """The LogoutResponse (no Destination: it answers on the IdP's own connection) as the
        one element of a SOAP 1.1 Body."""
        response = self._success(data, None)
        xml = str(response)
        if self._signs:
            xml = self._saml2().sign(response, sign_alg=RSA_SHA256, digest_alg=SHA256)
        return soap_envelope(xml.encode())

    async def logout_response(self, msg: IncomingMessage) -> LogoutResponseData:
        """The IdP's answer to our LogoutRequest; it must answer one we sent (once)."""
        idp = await self.metadata.require()
        data = await self._check(read_logout_response, msg, self._logout_policy(idp), self.xmlsec)
        raw = (
            await self.ctx.kv.take("saml-logout:" + data.in_response_to)
            if data.in_response_to
            else None
        )
        if raw is None or json.loads(raw)["conn"] != self.conn.id:
            raise LoginStateError("state_expired", "this LogoutResponse answers no pending logout")
        return data

    async def probe(self) -> list[tuple[bool, str]]:
        """`authgate test`: what to register at the IdP, and the IdP metadata checked now."""
        lines: list[tuple[bool, str]] = [
            (True, f"SP entity ID (Identifier): {self.sp.entity_id}"),
            *[(True, f"ACS URL (Reply URL): {url}") for url in self.sp.acs_urls],
            (True, f"SLO URL: {self.sp.slo_url if self.conn.slo else 'off'}"),
            (True, f"SLO URL (SOAP): {self.sp.soap_slo_url if self.conn.slo else 'off'}"),
            (True, f"SP metadata URL: {self.sp.metadata_url}"),
        ]
        await self.metadata.refresh()
        idp = self.metadata.current
        source = "IdP metadata" if self.metadata.refreshable else "IdP details (idp, no metadata)"
        if idp is None:
            return [*lines, (False, f"{source}: {self.metadata.error}")]
        binding, url = idp.sso_endpoint()
        slo = idp.slo_endpoint()
        lines += [
            (True, f"IdP entity ID: {idp.entity_id}"),
            (True, f"IdP SSO ({binding}): {url}"),
            (True, f"IdP SLO: {f'{slo[1]} ({slo[0]})' if slo else 'none'}"),
        ]
        lines += [(True, f"IdP signing certificate: {describe(c)}") for c in idp.signing_certs]
        if self.conn.response_binding == "artifact":
            ars = idp.artifact_resolution.get(0)
            lines.append(
                (ars is not None, f"IdP ArtifactResolutionService (index 0): {ars or 'none'}")
            )
        problem = self.metadata.problem() or self.metadata.error
        lines.append((problem is None, f"{source}: {problem or 'usable'}"))
        if idp.want_authn_requests_signed and not self._signs:
            lines.append((False, "the IdP wants signed AuthnRequests: add an sp_keys signing key"))
        return lines
