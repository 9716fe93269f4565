"""IdP metadata in a running authgate: URL fetch and refresh, last good copy, expiry and
staleness in readyz and `authgate status`; SP metadata; the login request it leads to."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from lxml import etree
from saml2 import md
from saml2.md import entity_descriptor_from_string
from saml2.metadata import entity_descriptor
from saml2.xml.schema import validate

from authgate.app import create_app
from authgate.cli import main
from authgate.keys import write_pair
from authgate.protocols.saml import SamlProtocol
from authgate.protocols.saml_config import SpEndpoints, _algorithms, sp_config, sp_metadata
from authgate.protocols.saml_crypto import verify_query_signature
from authgate.settings import load_settings
from tests.conftest import UPSTREAM_HITS
from tests.integration.test_saml_hostile import signed
from tests.readiness import check, wait_ready
from tests.saml_gate import ACS_URL, JSON, SP_ENTITY, decode_redirect, saml_settings
from tests.saml_idp import POST, REDIRECT, KeyPair, TestIdp, encode

MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"


class MetadataServer:
    """Serves IdP metadata at /metadata; `fail` switches it to HTTP 500."""

    def __init__(self, document: bytes) -> None:
        self.document = document
        self.fail = False
        self.hits = 0
        app = web.Application()
        app.router.add_get("/metadata", self.serve)
        self.server = TestServer(app)

    async def serve(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.fail:
            return web.Response(status=500, text="down")
        return web.Response(body=self.document, content_type="application/samlmetadata+xml")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/metadata"))


@pytest.fixture
async def metadata_server(saml_idp: TestIdp) -> AsyncIterator[MetadataServer]:
    server = MetadataServer(saml_idp.metadata())
    await server.server.start_server()
    yield server
    await server.server.close()


def protocol_of(browser) -> SamlProtocol:
    protocol = browser.state.connections.engine("corp")
    assert isinstance(protocol, SamlProtocol)
    return protocol


async def readiness(browser) -> dict:
    resp = await browser.gate.get("/_authgate/readyz")
    return {**(await resp.json()), "code": resp.status}


async def test_metadata_from_a_url_then_a_failing_refresh_keeps_the_last_good_copy(
    saml_gate, saml_idp, metadata_server
):
    browser = await saml_gate(idp_metadata_url=metadata_server.url, idp_metadata_file=None)
    await wait_ready(browser.gate)
    assert metadata_server.hits == 1
    metadata_server.fail = True
    protocol = protocol_of(browser)
    await protocol.metadata.refresh()
    assert "HTTP 500" in (protocol.metadata.error or "")
    assert (await readiness(browser))["code"] == 200
    rid = await browser.start()
    assert (await browser.post(encode(signed(saml_idp, rid)))).status == 302


async def test_stale_metadata_fails_readiness_and_shows_in_status(
    saml_gate, metadata_server, redis_url, tmp_path, capsys
):
    browser = await saml_gate(
        idp_metadata_url=metadata_server.url, idp_metadata_file=None, metadata_max_age="1s"
    )
    protocol = protocol_of(browser)
    await wait_ready(browser.gate)
    metadata_server.fail = True
    protocol.metadata.freshness.loaded_at = time.time() - 5
    await protocol.metadata.refresh()
    ready = await readiness(browser)
    assert ready["code"] == 503
    assert check(ready) == (
        "metadata_unavailable: IdP metadata last loaded 5s ago, more than metadata_max_age 1s"
        " (last attempt: HTTP 500)"
    )
    config = tmp_path / "authgate.yaml"
    config.write_text(
        "public_url: http://authgate.test\nupstream: {url: 'http://127.0.0.1:9'}\n"
        f"session: {{store: redis, redis: {{url: '{redis_url}'}}}}\n"
        "connections: [{id: corp, name: Corp, type: saml,"
        f" idp_metadata_url: '{metadata_server.url}'}}]\n"
    )
    await asyncio.to_thread(main, ["status", "--config", str(config)])
    out = capsys.readouterr().out
    assert "IdP metadata: metadata_unavailable: IdP metadata last loaded 5s ago" in out
    assert f"last metadata refresh failed: GET {metadata_server.url} answered HTTP 500" in out


async def test_a_new_replica_uses_the_stored_copy_while_the_idp_is_down(saml_gate, metadata_server):
    first = await saml_gate(idp_metadata_url=metadata_server.url, idp_metadata_file=None)
    await wait_ready(first.gate)
    metadata_server.fail = True
    replica = await saml_gate(idp_metadata_url=metadata_server.url, idp_metadata_file=None)
    await wait_ready(replica.gate)
    protocol = protocol_of(replica)
    assert protocol.metadata.current is not None
    assert "HTTP 500" in (protocol.metadata.error or "")
    loaded_at = protocol_of(first).metadata.freshness.loaded_at
    assert protocol.metadata.freshness.loaded_at == loaded_at, "as old as the first fetch"


async def test_unreachable_metadata_gives_metadata_unavailable(saml_gate, counted_upstream):
    browser = await saml_gate(
        idp_metadata_url="http://127.0.0.1:9/metadata", idp_metadata_file=None
    )
    resp = await browser.gate.get("/_authgate/saml/corp/login", headers=JSON)
    body = await resp.json()
    assert body["error"] == "metadata_unavailable"
    status = await browser.state.status.get("corp")
    assert status["last_failure_reason"] == "metadata_unavailable"
    assert counted_upstream.app[UPSTREAM_HITS] == []
    ready = await readiness(browser)
    assert ready["code"] == 503
    assert check(ready) == (
        "metadata_unavailable: IdP metadata not loaded yet (last attempt: unreachable)"
    )


async def test_expired_metadata_file_names_the_expiry(saml_gate, saml_idp, tmp_path):
    expired = tmp_path / "expired.xml"
    expired.write_bytes(saml_idp.metadata(valid_until=time.time() - 86400))
    browser = await saml_gate(idp_metadata_file=str(expired))
    check = (await readiness(browser))["checks"]["connection:corp"]
    assert "expired at" in check and "validUntil" in check
    resp = await browser.gate.get("/_authgate/saml/corp/login", headers=JSON)
    assert (await resp.json())["error"] == "metadata_unavailable"


async def test_metadata_that_expires_while_loaded(saml_gate, saml_idp, tmp_path):
    soon = tmp_path / "soon.xml"
    soon.write_bytes(saml_idp.metadata(valid_until=time.time() + 3600))
    browser = await saml_gate(idp_metadata_file=str(soon))
    protocol = protocol_of(browser)
    assert protocol.readiness_problem() is None
    protocol.metadata._clock = lambda: time.time() + 7200
    assert "expired at" in (protocol.readiness_problem() or "")


async def test_hand_given_idp(saml_gate, saml_idp):
    browser = await saml_gate(
        idp_metadata_file=None,
        idp={
            "entity_id": saml_idp.entity_id,
            "sso_url": saml_idp.sso_url,
            "certificates": [saml_idp.keys.cert_pem.decode()],
        },
    )
    rid = await browser.start()
    assert (await browser.post(encode(signed(saml_idp, rid)))).status == 302


async def test_rollover_second_idp_certificate_is_accepted(saml_gate, tmp_path):

    old, new = KeyPair.create("old-idp"), KeyPair.create("new-idp")
    idp = TestIdp(keys=new)
    both = tmp_path / "both.xml"
    both.write_bytes(idp.metadata(certs=(old.cert_b64, new.cert_b64)))
    browser = await saml_gate(idp_metadata_file=str(both))
    rid = await browser.start()
    assert (await browser.post(encode(signed(idp, rid)))).status == 302


# --- SP metadata and the AuthnRequest -----------------------------------------------------


async def test_sp_metadata_endpoint(saml_gate, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys], sign_requests=True, name_id_format="emailAddress")
    resp = await browser.gate.get("/_authgate/saml/corp/metadata")
    assert resp.status == 200
    assert resp.content_type == "application/samlmetadata+xml"
    root = etree.fromstring(await resp.read())
    assert root.get("entityID") == SP_ENTITY
    sp = root.find(MD + "SPSSODescriptor")
    assert sp.get("AuthnRequestsSigned") == "true"
    assert sp.get("WantAssertionsSigned") == "true"
    acs = sp.find(MD + "AssertionConsumerService")
    assert (acs.get("Location"), acs.get("Binding")) == (ACS_URL, POST)
    slo = {(e.get("Binding"), e.get("Location")) for e in sp.findall(MD + "SingleLogoutService")}
    assert slo == {
        (REDIRECT, SP_ENTITY + "/slo"),
        (POST, SP_ENTITY + "/slo"),
        ("urn:oasis:names:tc:SAML:2.0:bindings:SOAP", SP_ENTITY + "/slo/soap"),
    }
    uses = sorted(k.get("use") for k in sp.findall(MD + "KeyDescriptor"))
    assert uses == ["encryption", "signing"]
    assert sp.findtext(MD + "NameIDFormat").endswith("emailAddress")
    algorithms = [e.get("Algorithm") for e in root.iter() if e.get("Algorithm")]
    assert algorithms and not any("sha1" in a or "md5" in a for a in algorithms)


async def test_sp_metadata_publishes_the_rollover_key(saml_gate, sp_keys, tmp_path):

    write_pair(tmp_path / "next.key", tmp_path / "next.crt", "next", bits=2048)
    nxt = {"key_file": str(tmp_path / "next.key"), "cert_file": str(tmp_path / "next.crt")}
    browser = await saml_gate(sp_keys=[sp_keys, nxt])
    root = etree.fromstring(await (await browser.gate.get("/_authgate/saml/corp/metadata")).read())
    signing = root.findall(f".//{MD}KeyDescriptor[@use='signing']")
    encryption = root.findall(f".//{MD}KeyDescriptor[@use='encryption']")
    assert len(signing) == 2 and len(encryption) == 2


async def test_metadata_command_prints_the_same_document(
    aiohttp_client, tmp_path, capsys, saml_idp, sp_keys
):
    metadata = tmp_path / "idp.xml"
    metadata.write_bytes(saml_idp.metadata())
    config = tmp_path / "authgate.yaml"
    keys = f"[{{key_file: '{sp_keys['key_file']}', cert_file: '{sp_keys['cert_file']}'}}]"
    config.write_text(
        "public_url: http://authgate.test\nupstream: {url: 'http://127.0.0.1:9'}\n"
        "session: {store: memory}\n"
        f"connections: [{{id: corp, name: Corp, type: saml, idp_metadata_file: '{metadata}',"
        f" sp_keys: {keys}}}]\n"
    )
    assert await asyncio.to_thread(main, ["metadata", "corp", "--config", str(config)]) == 0
    printed = capsys.readouterr().out.encode()
    root = etree.fromstring(printed)
    assert root.get("entityID") == SP_ENTITY
    gate = await aiohttp_client(create_app(load_settings(config)))
    served = await (await gate.get("/_authgate/saml/corp/metadata")).read()
    assert served == printed, "the URL serves what the command prints"
    assert await asyncio.to_thread(main, ["metadata", "nope", "--config", str(config)]) == 2


def test_sp_metadata_is_indented_one_element_a_line_like_an_idp_download(sp_keys, tmp_path):
    idp = tmp_path / "idp.xml"
    idp.write_bytes(TestIdp().metadata())
    settings = saml_settings("http://127.0.0.1:9", idp, sp_keys=[sp_keys], sign_requests=True)
    conn = settings.connection("corp")
    config = sp_config(conn, SpEndpoints.build(conn, settings))
    document = sp_metadata(config)
    lines = document.decode().splitlines()
    assert lines[0] == "<?xml version='1.0' encoding='UTF-8'?>"
    assert lines[1].startswith("<md:EntityDescriptor ")
    assert lines[-1] == "</md:EntityDescriptor>"
    assert document.endswith(b">\n")
    root = etree.fromstring(document)
    elements = list(root.iter(etree.Element))
    closing = sum(1 for e in elements if len(e))
    assert len(lines) == 1 + len(elements) + closing, "one line per element (and its end tag)"
    opening = [line for line in lines[1:] if not line.lstrip().startswith("</")]
    for element, line in zip(elements, opening, strict=True):
        depth = sum(1 for _ in element.iterancestors())
        assert line.startswith("  " * depth + "<"), line[:80]
    assert "ns0:" not in document.decode()
    # The same document as pysaml2 writes it, but for whitespace and prefixes.
    raw = etree.fromstring(entity_descriptor_bytes(config))
    assert _shape(root) == _shape(raw)
    assert entity_descriptor_from_string(document.decode()).entity_id == SP_ENTITY
    validate(document.decode())  # the SAML 2.0 metadata schemas, strictly


def entity_descriptor_bytes(config) -> bytes:
    """pysaml2's own single-line rendering of the metadata sp_metadata() writes."""
    descriptor = entity_descriptor(config)
    descriptor.extensions = md.Extensions()
    for element in _algorithms():
        descriptor.extensions.add_extension_element(element)
    return descriptor.to_string()


def _shape(root) -> list[tuple[str, dict[str, str], str]]:
    return [(e.tag, dict(e.attrib), (e.text or "").strip()) for e in root.iter(etree.Element)]


def _cert_body(path: str) -> str:
    with open(path) as handle:
        return re.sub(r"-----[A-Z ]+-----|\s", "", handle.read())


async def test_login_redirect_signed_with_relay_state(saml_gate, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys], sign_requests=True)
    resp = await browser.gate.get(
        "/_authgate/saml/corp/login", params={"rd": "/app/x?y=1"}, allow_redirects=False
    )
    location = resp.headers["Location"]
    assert location.startswith("https://idp.example.test/sso?")
    raw = urlsplit(location).query
    query = parse_qs(raw)
    assert query["RelayState"] == ["/app/x?y=1"]
    request = decode_redirect(location)
    assert request.get("AssertionConsumerServiceURL") == ACS_URL
    assert request.get("Destination") == "https://idp.example.test/sso"
    parts = dict(p.split("=", 1) for p in raw.split("&"))
    octets = "&".join(f"{k}={parts[k]}" for k in ("SAMLRequest", "RelayState", "SigAlg")).encode()
    cert = _cert_body(sp_keys["cert_file"])
    assert verify_query_signature(octets, query["SigAlg"][0], query["Signature"][0], [cert])
    cookie = resp.headers["Set-Cookie"]
    assert "authgate_login=" in cookie and "HttpOnly" in cookie


async def test_login_by_http_post_when_the_idp_offers_only_that(saml_gate, saml_idp, tmp_path):
    post_only = tmp_path / "post.xml"
    post_only.write_bytes(saml_idp.metadata(sso_binding=POST))
    browser = await saml_gate(idp_metadata_file=str(post_only))
    resp = await browser.gate.get("/_authgate/saml/corp/login", params={"rd": "/r"})
    page = await resp.text()
    assert resp.status == 200
    assert 'action="https://idp.example.test/sso"' in page
    value = re.search(r'name="SAMLRequest" value="([^"]+)"', page).group(1)
    request = etree.fromstring(base64.b64decode(value))
    assert request.get("AssertionConsumerServiceURL") == ACS_URL
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1]


async def test_a_long_return_path_stays_server_side(saml_gate, saml_idp):

    browser = await saml_gate()
    long_path = "/app/" + "x" * 200
    resp = await browser.gate.get(
        "/_authgate/saml/corp/login", params={"rd": long_path}, allow_redirects=False
    )
    assert "RelayState" not in parse_qs(urlsplit(resp.headers["Location"]).query)
    rid = decode_redirect(resp.headers["Location"]).get("ID")
    done = await browser.post(encode(signed(saml_idp, rid)), relay_state="https://evil.test/")
    assert done.headers["Location"] == long_path


async def test_test_command_checks_the_idp_metadata(metadata_server, tmp_path, capsys):
    config = tmp_path / "authgate.yaml"
    config.write_text(
        "public_url: https://app.example.com\nupstream: {url: 'http://127.0.0.1:9'}\n"
        "connections: [{id: corp, name: Corp, type: saml,"
        f" idp_metadata_url: '{metadata_server.url}'}}]\n"
    )
    assert await asyncio.to_thread(main, ["test", "corp", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "ACS URL (Reply URL): https://app.example.com/_authgate/saml/corp/acs" in out
    assert "IdP metadata: usable" in out
    metadata_server.fail = True
    assert await asyncio.to_thread(main, ["test", "corp", "--config", str(config)]) == 1
    assert "FAIL IdP metadata: GET" in capsys.readouterr().out


def hand_given_config(tmp_path, idp: dict) -> Path:
    config = tmp_path / "authgate.yaml"
    connection = {"id": "corp", "name": "Corp", "type": "saml", "idp": idp}
    config.write_text(
        yaml.safe_dump(
            {
                "public_url": "https://app.example.com",
                "upstream": {"url": "http://127.0.0.1:9"},
                "connections": [connection],
            }
        )
    )
    return config


def authgate_test(config: Path) -> subprocess.CompletedProcess[str]:
    """`authgate test corp` as an operator runs it: a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "authgate", "test", "corp", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_test_command_checks_an_idp_given_by_hand(saml_idp, tmp_path):
    cert_file = tmp_path / "idp.crt"
    cert_file.write_bytes(saml_idp.keys.cert_pem)
    idp = {
        "entity_id": saml_idp.entity_id,
        "sso_url": saml_idp.sso_url,
        "sso_binding": "post",
        "slo_url": "https://idp.example.test/slo",
        "certificate_files": [str(cert_file)],
    }
    result = authgate_test(hand_given_config(tmp_path, idp))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    cert = x509.load_pem_x509_certificate(saml_idp.keys.cert_pem)
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    lines = result.stdout.splitlines()
    assert "ok  SLO URL (SOAP): https://app.example.com/_authgate/saml/corp/slo/soap" in lines
    assert lines[6:] == [
        f"ok  IdP entity ID: {saml_idp.entity_id}",
        f"ok  IdP SSO (post): {saml_idp.sso_url}",
        "ok  IdP SLO: https://idp.example.test/slo (redirect)",
        f"ok  IdP signing certificate: {cert.subject.rfc4514_string()}, valid until {until}",
        "ok  IdP details (idp, no metadata): usable",
        "result: OK",
    ]


def test_test_command_refuses_a_hand_given_certificate_that_is_none(saml_idp, tmp_path):
    idp = {
        "entity_id": saml_idp.entity_id,
        "sso_url": saml_idp.sso_url,
        "certificates": [base64.b64encode(b"not a certificate").decode()],
    }
    result = authgate_test(hand_given_config(tmp_path, idp))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "connections[0].idp.certificates[0]: expected an X.509 certificate" in result.stderr


async def test_test_reports_a_hand_given_certificate_file_that_went_away(
    saml_gate, saml_idp, tmp_path
):
    cert_file = tmp_path / "idp.crt"
    cert_file.write_bytes(saml_idp.keys.cert_pem)
    browser = await saml_gate(
        idp_metadata_file=None,
        idp={
            "entity_id": saml_idp.entity_id,
            "sso_url": saml_idp.sso_url,
            "certificate_files": [str(cert_file)],
        },
    )
    cert_file.unlink()
    lines = await protocol_of(browser).probe()
    detail = f"idp.certificate_files: [Errno 2] No such file or directory: '{cert_file}'"
    assert lines[-1] == (False, f"IdP details (idp, no metadata): {detail}")
    rid = await browser.start()
    assert (await browser.post(encode(signed(saml_idp, rid)))).status == 302


async def test_keys_generate_command(tmp_path):

    key, cert = tmp_path / "sp.key", tmp_path / "sp.crt"
    args = ["keys", "generate", "--key-out", str(key), "--cert-out", str(cert), "--bits", "2048"]
    assert await asyncio.to_thread(main, args) == 0
    assert key.stat().st_mode & 0o777 == 0o600
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert isinstance(parsed.signature_hash_algorithm, hashes.SHA256)
    assert await asyncio.to_thread(main, args) == 2
