"""The HTTP-Artifact binding at the ACS: a SAMLart resolved at the IdP's ArtifactResolutionService.

The IdP side is a real HTTP server (aiohttp) answering SOAP with ArtifactResponses
built and signed by the tamperable test IdP (tests/saml_idp.py: lxml + signxml),
so every hostile answer is one an IdP could send. Each refusal is checked with
its exact status and reason code, the connection's last failure and metric, no
session afterwards and no request reaching the upstream (`refused`).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from lxml import etree
from signxml import XMLVerifier
from yarl import URL

from authgate.app import create_app
from authgate.keys import generate
from authgate.settings import ConfigError
from tests.integration.test_saml_hostile import assertion, refused, response, signed
from tests.saml_gate import ACS_URL, JSON, SP_ENTITY, SamlBrowser, decode_redirect, saml_settings
from tests.saml_idp import SAML, SAMLP, KeyPair, TestIdp, soap

SOAP_ENV = "{http://schemas.xmlsoap.org/soap/envelope/}"
MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
ARTIFACT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"
Answer = Callable[[etree._Element], tuple[int, bytes]]


@dataclass
class ResolutionService:
    """The IdP's ArtifactResolutionService: resolves the artifacts `issue` handed out, once,
    unless a test sets `answer` to say something else; every ArtifactResolve is kept."""

    idp: TestIdp
    url: str = ""
    issued: dict[str, etree._Element] = field(default_factory=dict)
    received: list[etree._Element] = field(default_factory=list)
    answer: Answer | None = None

    def issue(self, message: etree._Element, **artifact: Any) -> str:
        value = self.idp.artifact(**artifact)
        self.issued[value] = message
        return value

    def resolve(self, request: etree._Element) -> tuple[int, bytes]:
        """The signed ArtifactResponse a correct IdP sends (empty for an unknown artifact)."""
        message = self.issued.pop(request.findtext(SAMLP + "Artifact"), None)
        content = [] if message is None else [message]
        reply = self.idp.artifact_response(*content, in_response_to=request.get("ID"))
        return 200, soap(self.idp.sign(reply))

    async def handle(self, request: web.Request) -> web.Response:
        (resolve,) = etree.fromstring(await request.read()).find(SOAP_ENV + "Body")
        self.received.append(resolve)
        status, body = (self.answer or self.resolve)(resolve)
        return web.Response(status=status, body=body, content_type="text/xml")


async def _serve(service: ResolutionService, tls: ssl.SSLContext | None = None) -> TestServer:
    app = web.Application()
    app.router.add_post("/saml/resolve", service.handle)
    server = TestServer(app)
    await server.start_server(ssl=tls)
    service.url = str(server.make_url("/saml/resolve"))
    return server


@pytest.fixture
async def resolver(saml_idp: TestIdp) -> AsyncIterator[ResolutionService]:
    service = ResolutionService(saml_idp)
    server = await _serve(service)
    yield service
    await server.close()


@pytest.fixture
async def artifact_gate(
    aiohttp_client: Callable[..., Any],
    saml_idp: TestIdp,
    resolver: ResolutionService,
    counted_upstream: TestServer,
    redis_url: str,
    sp_keys: dict[str, Any],
    tmp_path: Path,
) -> Callable[..., Any]:
    """Factory: authgate on Redis with `corp` asking `saml_idp` for artifacts; the IdP
    metadata names `resolver` (or `ars`) as its ArtifactResolutionService."""
    upstream_url = str(counted_upstream.make_url("")).rstrip("/")

    async def make(ars: str | None = None, **conn: Any) -> SamlBrowser:
        metadata = tmp_path / "idp-artifact-metadata.xml"
        metadata.write_bytes(saml_idp.metadata(artifact_resolution=ars or resolver.url))
        conn = {"sp_keys": [sp_keys], "response_binding": "artifact", **conn}
        settings = saml_settings(upstream_url, metadata, redis_url, **conn)
        return SamlBrowser(await aiohttp_client(create_app(settings)))

    return make


async def send_artifact(
    browser: SamlBrowser, value: str, method: str = "POST", **kw: Any
) -> aiohttp.ClientResponse:
    url = f"/_authgate/saml/{browser.conn}/acs"
    if method == "GET":
        return await browser.gate.get(
            url, params={"SAMLart": value}, headers=JSON, allow_redirects=False
        )
    headers = kw.pop("headers", JSON)
    return await browser.gate.post(
        url, data={"SAMLart": value}, headers=headers, allow_redirects=False, **kw
    )


async def artifact_refused(
    browser: SamlBrowser, value: str, status: int, reason: str, upstream: TestServer
) -> None:
    resp = await send_artifact(browser, value)
    assert resp.status == status
    await refused(browser, resp, reason, upstream)


def answering(reply: Callable[[etree._Element], etree._Element | bytes]) -> Answer:
    """An ARS answer (200) built from the ArtifactResolve by `reply`: a tree is wrapped in SOAP."""

    def answer(request: etree._Element) -> tuple[int, bytes]:
        built = reply(request)
        return 200, built if isinstance(built, bytes) else soap(built)

    return answer


def _sp_cert(sp_keys: dict[str, Any]) -> str:
    return Path(sp_keys["cert_file"]).read_text()


# --- the binding works ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_artifact_signs_in_after_a_signed_resolve(
    artifact_gate, saml_idp, resolver, sp_keys, counted_upstream, method
):
    browser = await artifact_gate()
    rid = await browser.start(rd="/app/page?x=1")
    resp = await send_artifact(browser, resolver.issue(signed(saml_idp, rid)), method)
    assert resp.status == 302, await resp.text()
    assert resp.headers["Location"] == "/app/page?x=1"
    page = await browser.gate.get("/app/page", headers=JSON)
    assert dict((await page.json())["headers"])["X-User"] == "alice@example.com"
    (request,) = resolver.received
    assert request.tag == SAMLP + "ArtifactResolve"
    assert request.findtext(SAML + "Issuer") == SP_ENTITY
    assert request.get("Destination") == resolver.url
    XMLVerifier().verify(request, x509_cert=_sp_cert(sp_keys))


async def test_the_authn_request_and_sp_metadata_ask_for_artifacts(artifact_gate):
    browser = await artifact_gate()
    login = await browser.gate.get("/_authgate/saml/corp/login", allow_redirects=False)
    request = decode_redirect(login.headers["Location"])
    assert request.get("ProtocolBinding") == ARTIFACT
    assert request.get("AssertionConsumerServiceURL") == ACS_URL
    metadata = etree.fromstring(
        await (await browser.gate.get("/_authgate/saml/corp/metadata")).read()
    )
    services = {
        (s.get("Binding"), s.get("Location"))
        for s in metadata.iter(MD + "AssertionConsumerService")
    }
    assert (ARTIFACT, ACS_URL) in services
    assert ("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST", ACS_URL) in services


async def test_authgate_test_names_the_resolution_service(artifact_gate, resolver):
    browser = await artifact_gate()
    protocol = browser.state.connections.engine("corp")
    assert (True, f"IdP ArtifactResolutionService (index 0): {resolver.url}") in (
        await protocol.probe()
    )


def test_artifact_responses_need_an_sp_signing_key(tmp_path):
    metadata = tmp_path / "idp.xml"
    metadata.write_bytes(TestIdp().metadata())
    with pytest.raises(ConfigError, match="response_binding artifact needs an sp_keys"):
        saml_settings("http://127.0.0.1:1", metadata, response_binding="artifact")


# --- the artifact itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["not base64 at all!", "AAQAAA==", "QUFBQQ" * 8],
    ids=["not-base64", "too-short", "44-chars-but-33-bytes"],
)
async def test_malformed_artifact(artifact_gate, resolver, counted_upstream, value):
    browser = await artifact_gate()
    await browser.start()
    await artifact_refused(browser, value, 400, "invalid_request", counted_upstream)
    assert resolver.received == []


async def test_wrong_type_code(artifact_gate, saml_idp, resolver, counted_upstream):
    browser = await artifact_gate()
    rid = await browser.start()
    value = resolver.issue(signed(saml_idp, rid), type_code=1)
    await artifact_refused(browser, value, 400, "invalid_request", counted_upstream)
    assert resolver.received == []


async def test_source_id_of_another_idp(artifact_gate, saml_idp, resolver, counted_upstream):
    browser = await artifact_gate()
    rid = await browser.start()
    value = resolver.issue(signed(saml_idp, rid), entity_id="https://other-idp.example.test")
    await artifact_refused(browser, value, 400, "issuer_mismatch", counted_upstream)
    assert resolver.received == []


async def test_endpoint_index_the_idp_does_not_publish(
    artifact_gate, saml_idp, resolver, counted_upstream
):
    browser = await artifact_gate()
    rid = await browser.start()
    value = resolver.issue(signed(saml_idp, rid), index=3)
    await artifact_refused(browser, value, 400, "invalid_request", counted_upstream)


async def test_artifact_used_twice_even_on_another_replica(
    artifact_gate, saml_idp, resolver, counted_upstream
):
    browser = await artifact_gate()
    rid = await browser.start()
    value = resolver.issue(signed(saml_idp, rid))
    assert (await send_artifact(browser, value)).status == 302
    replica = await artifact_gate()
    await replica.start()
    resp = await send_artifact(replica, value)
    assert resp.status == 400
    assert (await resp.json())["error"] == "replayed"
    assert len(resolver.received) == 1


async def test_artifact_the_idp_does_not_know(artifact_gate, saml_idp, resolver, counted_upstream):
    """A correct IdP answers an unknown (or already resolved) artifact with an empty
    ArtifactResponse, as Keycloak does."""
    browser = await artifact_gate()
    await browser.start()
    await artifact_refused(browser, saml_idp.artifact(), 400, "idp_error", counted_upstream)
    assert len(resolver.received) == 1


async def test_artifact_without_a_sign_in_under_way_is_not_resolved(
    artifact_gate, saml_idp, resolver, counted_upstream
):
    browser = await artifact_gate()
    value = resolver.issue(signed(saml_idp, "_none"))
    await artifact_refused(browser, value, 400, "state_mismatch", counted_upstream)
    assert resolver.received == []


async def test_artifact_at_a_connection_that_takes_posts(
    saml_gate, saml_idp, resolver, counted_upstream
):
    browser = await saml_gate()
    rid = await browser.start()
    value = resolver.issue(signed(saml_idp, rid))
    await artifact_refused(browser, value, 400, "invalid_request", counted_upstream)
    assert resolver.received == []


# --- the ArtifactResponse ---------------------------------------------------------------------


async def test_artifact_response_unsigned(artifact_gate, saml_idp, resolver, counted_upstream):
    browser = await artifact_gate()
    rid = await browser.start()
    inner = signed(saml_idp, rid)
    resolver.answer = answering(
        lambda req: saml_idp.artifact_response(inner, in_response_to=req.get("ID"))
    )
    await artifact_refused(browser, saml_idp.artifact(), 400, "signature_invalid", counted_upstream)


async def test_artifact_response_signed_by_another_key(
    artifact_gate, saml_idp, resolver, counted_upstream
):
    browser = await artifact_gate()
    rid = await browser.start()
    inner, other = signed(saml_idp, rid), KeyPair.create("attacker")
    resolver.answer = answering(
        lambda req: saml_idp.sign(
            saml_idp.artifact_response(inner, in_response_to=req.get("ID")), keys=other
        )
    )
    await artifact_refused(browser, saml_idp.artifact(), 400, "signature_invalid", counted_upstream)


async def test_artifact_response_from_another_issuer(
    artifact_gate, saml_idp, resolver, counted_upstream
):
    browser = await artifact_gate()
    rid = await browser.start()
    inner = signed(saml_idp, rid)
    resolver.answer = answering(
        lambda req: saml_idp.sign(
            saml_idp.artifact_response(
                inner, in_response_to=req.get("ID"), issuer="https://other-idp.example.test"
            )
        )
    )
    await artifact_refused(browser, saml_idp.artifact(), 400, "issuer_mismatch", counted_upstream)


async def test_artifact_response_to_another_resolve(
    artifact_gate, saml_idp, resolver, counted_upstream
):
    browser = await artifact_gate()
    rid = await browser.start()
    inner = signed(saml_idp, rid)
    resolver.answer = answering(
        lambda req: saml_idp.sign(saml_idp.artifact_response(inner, in_response_to="_another"))
    )
    await artifact_refused(browser, saml_idp.artifact(), 400, "state_mismatch", counted_upstream)


async def test_artifact_response_with_an_error_status(
    artifact_gate, saml_idp, resolver, counted_upstream
):
    browser = await artifact_gate()
    await browser.start()
    denied = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied"
    resolver.answer = answering(
        lambda req: saml_idp.sign(
            saml_idp.artifact_response(in_response_to=req.get("ID"), status=denied)
        )
    )
    await artifact_refused(browser, saml_idp.artifact(), 400, "idp_error", counted_upstream)


async def test_artifact_response_holding_no_response(
    artifact_gate, saml_idp, resolver, counted_upstream
):
    browser = await artifact_gate()
    await browser.start()
    other = saml_idp.logout_request("alice@example.com", ACS_URL)
    resolver.answer = answering(
        lambda req: saml_idp.sign(saml_idp.artifact_response(other, in_response_to=req.get("ID")))
    )
    await artifact_refused(browser, saml_idp.artifact(), 400, "invalid_request", counted_upstream)


async def test_inner_response_is_checked_like_a_posted_one(
    artifact_gate, saml_idp, resolver, counted_upstream
):
    """A validly signed ArtifactResponse does not excuse its Response: here the assertion is
    for another audience."""
    browser = await artifact_gate()
    rid = await browser.start()
    value = resolver.issue(signed(saml_idp, rid, audience="https://other-sp.example.test"))
    await artifact_refused(browser, value, 400, "audience_mismatch", counted_upstream)


async def test_inner_response_unsigned(artifact_gate, saml_idp, resolver, counted_upstream):
    browser = await artifact_gate()
    rid = await browser.start()
    value = resolver.issue(response(saml_idp, rid, assertion(saml_idp, rid)))
    await artifact_refused(browser, value, 400, "signature_invalid", counted_upstream)


async def test_inner_response_to_another_sign_in(
    artifact_gate, saml_idp, resolver, counted_upstream
):
    browser = await artifact_gate()
    await browser.start()
    value = resolver.issue(signed(saml_idp, "_never-issued"))
    await artifact_refused(browser, value, 400, "state_expired", counted_upstream)


# --- the resolution service ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (lambda req: (200, b"<<< not xml"), 400, "invalid_request"),
        (lambda req: (200, b"<html><body>hello</body></html>"), 400, "invalid_request"),
        (lambda req: (200, b"<a>" + b" " * 600_000 + b"</a>"), 400, "idp_error"),
        (lambda req: (500, b"oops"), 400, "idp_error"),
        (lambda req: (302, b""), 400, "idp_error"),
    ],
    ids=["garbage", "not-soap", "oversized", "http-500", "redirect"],
)
async def test_resolution_service_failures(
    artifact_gate, saml_idp, resolver, counted_upstream, answer, status, reason
):
    browser = await artifact_gate()
    await browser.start()
    resolver.answer = answer
    await artifact_refused(browser, saml_idp.artifact(), status, reason, counted_upstream)


async def test_resolution_service_unreachable(artifact_gate, saml_idp, counted_upstream):
    browser = await artifact_gate(ars="http://127.0.0.1:9/saml/resolve")
    await browser.start()
    await artifact_refused(browser, saml_idp.artifact(), 400, "idp_error", counted_upstream)


async def test_resolution_service_over_plain_http_to_a_real_host(
    artifact_gate, saml_idp, counted_upstream
):
    browser = await artifact_gate(ars="http://idp.example.test/saml/resolve")
    await browser.start()
    await artifact_refused(browser, saml_idp.artifact(), 400, "idp_error", counted_upstream)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:{port}/saml/resolve", "https://127.0.0.1:{port}/saml/resolve",
     "https://localhost:{port}/saml/resolve"],
    ids=["http-loopback", "https-loopback-literal", "https-name-resolving-to-loopback"],
)  # fmt: skip
async def test_a_setup_link_holders_idp_is_resolved_at_public_addresses_only(
    artifact_gate, saml_idp, resolver, counted_upstream, url
):
    """A setup-link holder's metadata names the resolution service: it may not point
    authgate at the operator's own network (as the metadata URL may not)."""
    port = URL(resolver.url).port
    browser = await artifact_gate(ars=url.format(port=port), idp_metadata_public_only=True)
    await browser.start()
    await artifact_refused(browser, saml_idp.artifact(), 400, "idp_error", counted_upstream)
    assert resolver.received == []


async def test_resolution_service_with_an_untrusted_certificate(
    artifact_gate, saml_idp, tmp_path, counted_upstream
):
    """TLS is verified as for every IdP call: a self-signed certificate fails the resolve."""
    key_pem, cert_pem = generate("127.0.0.1", days=1, bits=2048)
    (tmp_path / "tls.key").write_bytes(key_pem)
    (tmp_path / "tls.crt").write_bytes(cert_pem)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    service = ResolutionService(saml_idp)
    server = await _serve(service, tls)
    try:
        assert service.url.startswith("https://")
        browser = await artifact_gate(ars=service.url)
        rid = await browser.start()
        value = service.issue(signed(saml_idp, rid))
        await artifact_refused(browser, value, 400, "idp_error", counted_upstream)
        assert service.received == []
    finally:
        await server.close()


async def test_hand_given_idp_with_a_resolution_url(
    aiohttp_client, saml_idp, resolver, counted_upstream, redis_url, sp_keys, tmp_path
):
    upstream_url = str(counted_upstream.make_url("")).rstrip("/")
    settings = saml_settings(
        upstream_url,
        tmp_path / "unused.xml",
        redis_url,
        idp_metadata_file=None,
        idp={
            "entity_id": saml_idp.entity_id,
            "sso_url": saml_idp.sso_url,
            "certificates": [saml_idp.keys.cert_b64],
            "artifact_resolution_url": resolver.url,
        },
        sp_keys=[sp_keys],
        response_binding="artifact",
    )
    browser = SamlBrowser(await aiohttp_client(create_app(settings)))
    rid = await browser.start()
    resp = await send_artifact(browser, resolver.issue(signed(saml_idp, rid)))
    assert resp.status == 302, await resp.text()
