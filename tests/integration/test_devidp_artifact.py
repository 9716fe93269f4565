"""The development IdP answers with artifacts, and authgate resolves them: both real servers.

authgate's connection `dev` asks for the HTTP-Artifact binding; the development
IdP (pysaml2's IdP) then POSTs a SAMLart through the browser and serves the
Response, once, at its ArtifactResolutionService to the SP's signed
ArtifactResolve. The browser is a plain HTTP client that fills the IdP's
sign-in form and submits its auto-POST page.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from lxml import etree
from yarl import URL

from authgate.app import create_app
from authgate.devidp import DevIdp, DevIdpConfig
from authgate.devidp import create_app as create_idp_app
from authgate.devidp.saml import SamlRequestError
from authgate.protocols.saml_config import SpEndpoints, sp_config, sp_metadata
from authgate.protocols.saml_metadata import parse_idp_metadata
from authgate.settings import SamlConnection, Settings, parse_settings
from tests.keycloak import only_form
from tests.saml_idp import soap
from tests.servers import require_binary

HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}
SAMLP = "{urn:oasis:names:tc:SAML:2.0:protocol}"
SAML = "{urn:oasis:names:tc:SAML:2.0:assertion}"


def _listening() -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _settings(gate_url: str, idp_url: str, upstream: str, sp_keys: dict[str, Any]) -> Settings:
    return parse_settings(
        {
            "public_url": gate_url,
            "upstream": {"url": upstream},
            "session": {"store": "memory"},
            "audit": {"output": "stdout"},
            "connections": [
                {
                    "id": "dev",
                    "name": "Development IdP",
                    "type": "saml",
                    "idp_metadata_url": idp_url + "/saml/metadata",
                    "sp_keys": [sp_keys],
                    "sign_requests": True,
                    "name_id_format": "persistent",
                    "response_binding": "artifact",
                }
            ],
        },
        "devidp-artifact.yaml",
    )


def _sp_metadata(settings: Settings) -> bytes:
    conn = settings.connections[0]
    assert isinstance(conn, SamlConnection)
    return sp_metadata(sp_config(conn, SpEndpoints.build(conn, settings)))


@dataclass(frozen=True)
class Stack:
    idp: DevIdp
    idp_url: str
    gate_url: str


async def _serve(app: web.Application, sock: socket.socket) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


@pytest.fixture
async def stack(
    tmp_path: Path, sp_keys: dict[str, Any], counted_upstream: TestServer
) -> AsyncIterator[Stack]:
    require_binary("xmlsec1")
    (idp_sock, idp_url), (gate_sock, gate_url) = _listening(), _listening()
    upstream = str(counted_upstream.make_url("")).rstrip("/")
    settings = _settings(gate_url, idp_url, upstream, sp_keys)
    metadata = await asyncio.to_thread(_sp_metadata, settings)
    config = DevIdpConfig(base_url=idp_url, service_providers=(metadata,))
    idp = await asyncio.to_thread(DevIdp.create, config, tmp_path)
    idp_runner = await _serve(create_idp_app(idp), idp_sock)
    gate_runner = await _serve(create_app(settings), gate_sock)
    try:
        yield Stack(idp, idp_url, gate_url)
    finally:
        await gate_runner.cleanup()
        await idp_runner.cleanup()


async def artifact_form(http: aiohttp.ClientSession, stack: Stack) -> tuple[str, dict[str, str]]:
    """From authgate's login through the IdP's sign-in form to its auto-POST page."""
    login = await http.get(
        stack.gate_url + "/_authgate/saml/dev/login?rd=/app/page",
        headers=HTML,
        allow_redirects=False,
    )
    assert login.status == 302, await login.text()
    sso = await http.get(URL(login.headers["Location"], encoded=True), allow_redirects=False)
    assert sso.status == 302, await sso.text()
    txn = URL(sso.headers["Location"]).query["txn"]
    form = {"txn": txn, "email": "alice@example.com", "password": "demo"}
    page = await http.post(stack.idp_url + "/login", data=form, allow_redirects=False)
    assert page.status == 200, await page.text()
    return only_form(await page.text())


async def test_the_idp_answers_with_an_artifact_authgate_resolves(stack: Stack):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        action, fields = await artifact_form(http, stack)
        assert action == stack.gate_url + "/_authgate/saml/dev/acs"
        assert set(fields) == {"SAMLart", "RelayState"}
        resp = await http.post(action, data=fields, headers=HTML, allow_redirects=False)
        assert resp.status == 302, await resp.text()
        assert resp.headers["Location"] == "/app/page"
        me = await http.get(stack.gate_url + "/_authgate/userinfo", headers=JSON)
        assert (await me.json())["email"] == "alice@example.com"
        await http.get(stack.gate_url + "/_authgate/saml/dev/login", allow_redirects=False)
        again = await http.post(action, data=fields, headers=JSON, allow_redirects=False)
        assert again.status == 400
        assert (await again.json())["error"] == "replayed"


async def test_the_idp_publishes_its_resolution_service(stack: Stack):
    async with aiohttp.ClientSession() as http:
        raw = await (await http.get(stack.idp_url + "/saml/metadata")).read()
    assert parse_idp_metadata(raw).artifact_resolution == {0: stack.idp_url + "/saml/resolve"}


async def test_the_idp_resolves_only_a_signed_resolve(stack: Stack):
    """An unsigned ArtifactResolve for an artifact the IdP issued gets nothing, over HTTP."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        _, fields = await artifact_form(http, stack)
        resolve = etree.Element(SAMLP + "ArtifactResolve", nsmap={"samlp": SAMLP[1:-1]})
        resolve.attrib.update(
            {"ID": "_r1", "Version": "2.0", "IssueInstant": "2026-01-01T00:00:00Z"}
        )
        etree.SubElement(resolve, SAML + "Issuer").text = stack.gate_url + "/_authgate/saml/dev"
        etree.SubElement(resolve, SAMLP + "Artifact").text = fields["SAMLart"]
        answer = await http.post(
            stack.idp_url + "/saml/resolve",
            data=soap(resolve),
            headers={"Content-Type": "text/xml"},
        )
    assert answer.status == 400
    assert "ArtifactResolve was refused" in await answer.text()
    with pytest.raises(SamlRequestError, match="ArtifactResolve was refused"):
        stack.idp.saml.resolve_artifact(b"<not-soap/>")
