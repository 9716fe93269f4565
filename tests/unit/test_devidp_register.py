"""Registering SAML SPs and OIDC clients on the development IdP's page, while it runs.

The SPs are authgate's own SAML connections (their real metadata and signed
AuthnRequests, see test_devidp_saml.Sp), served over real loopback HTTP.
Every refusal is checked for its exact status and sentence, and for not
repeating what was sent.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree

from authgate.devidp import DevIdp, DevIdpConfig, create_app
from authgate.devidp.oidc import s256
from authgate.devidp.saml import SpOptions
from tests.servers import require_binary
from tests.unit.test_devidp_saml import Sp

BASE = "http://127.0.0.1:4181"
MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
OWN_PAGE = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
REDIRECT = "http://127.0.0.1:4180/_authgate/oidc/runtime/callback"
VERIFIER = "w" * 64
ORIGIN_REFUSAL = (
    f"This form must be sent from the development IdP's own page: open {BASE}/ and register there."
)
TOKEN_REFUSAL = (
    "The form's token is missing or out of date (the IdP may have restarted):"
    " reload the IdP's page and register again."
)
LOOPBACK_REFUSAL = (
    "The development IdP fetches metadata from loopback addresses only"
    " (127.0.0.1, ::1, localhost). Paste the metadata XML instead."
)
NOT_XML = "This is not SAML metadata: it does not parse as XML."
ONE_SP = (
    "The metadata must describe exactly one SAML 2.0 service provider"
    " (an EntityDescriptor with an SPSSODescriptor)."
)
BAD_URL = (
    "must be an absolute http:// or https:// URL with a host, without a user name or #fragment."
)
DOCUMENTS: web.AppKey[dict[str, bytes]] = web.AppKey("documents", dict)
FETCH_FAILED = (
    "Could not fetch the metadata: check the URL and that the service provider is running."
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_binary("xmlsec1")
    return tmp_path_factory.mktemp("devidp-register")


@pytest.fixture(scope="module")
def idp(keys: Path) -> DevIdp:
    return DevIdp.create(DevIdpConfig(base_url=BASE), keys)


@pytest.fixture
async def web_client(idp: DevIdp, aiohttp_client: Callable[..., Any]) -> TestClient:
    return await aiohttp_client(create_app(idp))


@pytest.fixture
async def sp_server(aiohttp_server: Callable[..., Any]) -> TestServer:
    """Where SP metadata is fetched from: authgate's path for it, and some bad answers."""
    documents: dict[str, bytes] = {}

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "moved":
            raise web.HTTPFound("/_authgate/saml/elsewhere/metadata")
        if name not in documents:
            raise web.HTTPNotFound()
        return web.Response(body=documents[name], content_type="application/samlmetadata+xml")

    app = web.Application()
    app[DOCUMENTS] = documents
    app.router.add_get("/_authgate/saml/{name}/metadata", serve)
    return await aiohttp_server(app)


def serve_metadata(server: TestServer, name: str, body: bytes) -> str:
    server.app[DOCUMENTS][name] = body
    return str(server.make_url(f"/_authgate/saml/{name}/metadata"))


def message_of(page: str) -> str:
    found = re.search(r'<p id="message">(.*?)</p>', page, re.S)
    assert found is not None, page
    return html.unescape(found.group(1))


async def post(
    web_client: TestClient,
    path: str,
    data: dict[str, str],
    token: str | None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    form = {**data, "form_token": token} if token is not None else data
    resp = await web_client.post(path, data=form, headers=OWN_PAGE if headers is None else headers)
    return resp.status, await resp.text()


def signed_sso_query(sp: Sp) -> dict[str, str]:
    return sp.redirect(sp.authn_request())


async def sso(web_client: TestClient, sp: Sp) -> tuple[int, str]:
    resp = await web_client.get("/saml/sso", params=signed_sso_query(sp), allow_redirects=False)
    return resp.status, resp.headers.get("Location", "") or await resp.text()


async def test_the_index_offers_both_forms_with_the_token_and_sends_our_origin(
    web_client: TestClient, idp: DevIdp
):
    resp = await web_client.get("/")
    page = await resp.text()
    assert resp.headers["Referrer-Policy"] == "same-origin"
    assert "Register a service provider" in page
    for action in ("/register/saml", "/register/oidc"):
        assert f'<form method="post" action="{action}"' in page
    assert page.count(f'name="form_token" value="{idp.form_token}"') == 2


async def test_an_sp_registered_by_metadata_url_is_answered_from_then_on(
    web_client: TestClient, idp: DevIdp, keys: Path, sp_server: TestServer
):
    sp = Sp(keys, "by-url")
    status, text = await sso(web_client, sp)
    assert (status, "the AuthnRequest was refused" in text) == (400, True)
    url = serve_metadata(sp_server, "by-url", sp.metadata)
    status, page = await post(web_client, "/register/saml", {"metadata_url": url}, idp.form_token)
    assert status == 200
    assert "<h1>SAML service provider registered</h1>" in page
    assert f'<code id="sp-entity-id">{sp.endpoints.entity_id}</code>' in page
    assert f"<li><code>{sp.endpoints.acs_url}</code></li>" in page
    assert f'<code id="idp-metadata-url">{BASE}/saml/metadata</code>' in page
    status, location = await sso(web_client, sp)
    assert (status, location.startswith("/login?txn=")) == (302, True)
    login = await web_client.get(location)
    assert f"Sign in to continue to {sp.endpoints.entity_id}" in await login.text()


async def test_pasted_metadata_is_trusted_too(web_client: TestClient, idp: DevIdp, keys: Path):
    sp = Sp(keys, "pasted")
    data = {"metadata_xml": sp.metadata.decode()}
    status, page = await post(web_client, "/register/saml", data, idp.form_token)
    assert (status, f'<code id="sp-entity-id">{sp.endpoints.entity_id}</code>' in page) == (
        200,
        True,
    )
    assert (await sso(web_client, sp))[0] == 302


async def test_registering_again_replaces_the_sp_and_its_key(
    web_client: TestClient, idp: DevIdp, tmp_path: Path
):
    (tmp_path / "new").mkdir()
    first, second = Sp(tmp_path, "rekeyed"), Sp(tmp_path / "new", "rekeyed")
    assert first.endpoints.entity_id == second.endpoints.entity_id
    for sp, heading in [(first, "registered"), (second, "updated")]:
        data = {"metadata_xml": sp.metadata.decode()}
        status, page = await post(web_client, "/register/saml", data, idp.form_token)
        assert (status, f"<h1>SAML service provider {heading}</h1>" in page) == (200, True)
    assert (await sso(web_client, second))[0] == 302
    status, text = await sso(web_client, first)
    assert (status, "the AuthnRequest was refused" in text) == (400, True)


async def test_an_oidc_client_registered_on_the_page_completes_the_code_flow(
    web_client: TestClient, idp: DevIdp
):
    logout = "http://127.0.0.1:4180/_authgate/logout"
    data = {"redirect_uri": REDIRECT, "post_logout_redirect_uri": logout}
    status, page = await post(web_client, "/register/oidc", data, idp.form_token)
    assert status == 200
    client_id = re.search(r'<code id="oidc-client-id">([^<]+)</code>', page)
    secret = re.search(r'<code id="oidc-client-secret">([^<]+)</code>', page)
    assert client_id is not None and secret is not None
    assert f'<code id="oidc-issuer">{BASE}/oidc</code>' in page
    query = {
        "client_id": client_id.group(1),
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
    }
    resp = await web_client.get("/oidc/authorize", params=query, allow_redirects=False)
    txn = parse_qs(urlsplit(resp.headers["Location"]).query)["txn"][0]
    signed_in = await web_client.post(
        "/login",
        data={"txn": txn, "email": "dave@partner.example", "password": "demo"},
        allow_redirects=False,
    )
    code = parse_qs(urlsplit(signed_in.headers["Location"]).query)["code"][0]
    basic = base64.b64encode(f"{client_id.group(1)}:{secret.group(1)}".encode()).decode()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
    }
    tokens = await web_client.post(
        "/oidc/token", data=form, headers={"Authorization": f"Basic {basic}"}
    )
    assert (tokens.status, "id_token" in await tokens.json()) == (200, True)
    bye = await web_client.get(
        "/oidc/end_session",
        params={"client_id": client_id.group(1), "post_logout_redirect_uri": logout},
        allow_redirects=False,
    )
    assert (bye.status, bye.headers["Location"]) == (302, logout)


@pytest.mark.parametrize("path", ["/register/saml", "/register/oidc"])
@pytest.mark.parametrize(
    ("headers", "token", "refusal"),
    [
        (OWN_PAGE, None, TOKEN_REFUSAL),
        (OWN_PAGE, "", TOKEN_REFUSAL),
        (OWN_PAGE, "guessed-token", TOKEN_REFUSAL),
        ({}, "right", ORIGIN_REFUSAL),
        ({"Sec-Fetch-Site": "same-origin"}, "right", ORIGIN_REFUSAL),
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, "right", ORIGIN_REFUSAL),
        ({"Origin": "http://127.0.0.1:4180"}, "right", ORIGIN_REFUSAL),
        ({"Origin": BASE, "Sec-Fetch-Site": "cross-site"}, "right", ORIGIN_REFUSAL),
        ({"Origin": BASE, "Sec-Fetch-Site": "same-site"}, "right", ORIGIN_REFUSAL),
    ],
)
async def test_a_form_not_from_the_idp_page_is_refused_and_registers_nothing(
    web_client: TestClient,
    idp: DevIdp,
    tmp_path: Path,
    path: str,
    headers: dict[str, str],
    token: str | None,
    refusal: str,
):
    sp = Sp(tmp_path, "forged")
    data = {"metadata_xml": sp.metadata.decode(), "redirect_uri": REDIRECT}
    clients = dict(idp.oidc.clients)
    sent = idp.form_token if token == "right" else token
    status, page = await post(web_client, path, data, sent, headers)
    assert (status, message_of(page)) == (403, refusal)
    assert "<h1>Registration refused</h1>" in page
    assert (await sso(web_client, sp))[0] == 400
    assert idp.oidc.clients == clients


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/_authgate/saml/x/metadata",
        "http://10.0.0.1/metadata",
        "http://127.0.0.1.nip.io/metadata",
        "http://[2001:db8::1]/metadata",
        "http://localhost.example/metadata",
    ],
)
async def test_a_metadata_url_off_loopback_is_refused_without_fetching(
    web_client: TestClient, idp: DevIdp, url: str
):
    status, page = await post(web_client, "/register/saml", {"metadata_url": url}, idp.form_token)
    assert (status, message_of(page)) == (400, LOOPBACK_REFUSAL)
    assert url not in page


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/m", "127.0.0.1/metadata", "http://[::1/x"]
)
async def test_a_metadata_url_that_is_not_http_is_refused(
    web_client: TestClient, idp: DevIdp, url: str
):
    status, page = await post(web_client, "/register/saml", {"metadata_url": url}, idp.form_token)
    assert (status, message_of(page)) == (400, f"The metadata URL {BAD_URL}")
    assert url not in page


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        ({}, "Give either the SP's metadata URL or its metadata XML."),
        (
            {"metadata_url": "http://127.0.0.1/m", "metadata_xml": "<x/>"},
            "Give either the SP's metadata URL or its metadata XML.",
        ),
        ({"metadata_xml": "<not-closed"}, NOT_XML),
        ({"metadata_xml": "<script>alert(1)</script>"}, ONE_SP),
        (
            {"metadata_xml": '<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>'},
            NOT_XML,
        ),
    ],
)
async def test_unusable_metadata_is_refused_without_echo(
    web_client: TestClient, idp: DevIdp, data: dict[str, str], refusal: str
):
    status, page = await post(web_client, "/register/saml", data, idp.form_token)
    assert (status, message_of(page)) == (400, refusal)
    assert "alert(1)" not in page
    assert "boom" not in page


async def test_idp_metadata_describes_no_service_provider(web_client: TestClient, idp: DevIdp):
    data = {"metadata_xml": idp.saml.metadata().decode()}
    status, page = await post(web_client, "/register/saml", data, idp.form_token)
    assert (status, message_of(page)) == (400, ONE_SP)


def _without_keys(root: etree._Element) -> None:
    for key in list(root.iter(f"{MD}KeyDescriptor")):
        parent = key.getparent()
        assert parent is not None
        parent.remove(key)


def _artifact_acs_only(root: etree._Element) -> None:
    for acs in root.iter(f"{MD}AssertionConsumerService"):
        acs.set("Binding", "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact")


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        (
            _without_keys,
            "The SP metadata has no signing certificate, and this IdP accepts only signed"
            " AuthnRequests.",
        ),
        (
            _artifact_acs_only,
            "The SP metadata lists no AssertionConsumerService with the HTTP-POST binding,"
            " the only one this IdP answers with.",
        ),
    ],
)
async def test_sp_metadata_this_idp_could_not_answer_is_refused(
    web_client: TestClient,
    idp: DevIdp,
    tmp_path: Path,
    edit: Callable[[etree._Element], None],
    refusal: str,
):
    sp = Sp(tmp_path, "unanswerable")
    root = etree.fromstring(sp.metadata)
    edit(root)
    data = {"metadata_xml": etree.tostring(root).decode()}
    status, page = await post(web_client, "/register/saml", data, idp.form_token)
    assert (status, message_of(page)) == (400, refusal)
    assert (await sso(web_client, sp))[0] == 400


async def test_fetched_metadata_that_does_not_parse_is_refused(
    web_client: TestClient, idp: DevIdp, sp_server: TestServer
):
    url = serve_metadata(sp_server, "garbage", b"<html>not metadata")
    status, page = await post(web_client, "/register/saml", {"metadata_url": url}, idp.form_token)
    assert (status, message_of(page)) == (400, NOT_XML)
    latin = serve_metadata(sp_server, "latin", b"<x>\xe9</x>")
    status, page = await post(web_client, "/register/saml", {"metadata_url": latin}, idp.form_token)
    assert (status, message_of(page)) == (400, "This is not SAML metadata: it is not UTF-8 XML.")
    big = serve_metadata(sp_server, "big", b" " * (512 * 1024 + 1))
    status, page = await post(web_client, "/register/saml", {"metadata_url": big}, idp.form_token)
    assert (status, message_of(page)) == (400, "The metadata is larger than 512 KiB.")


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        ("missing", "The metadata URL answered HTTP 404, not 200 with metadata."),
        ("moved", "The metadata URL answered HTTP 302, not 200 with metadata."),
    ],
)
async def test_a_metadata_url_must_answer_the_document_itself(
    web_client: TestClient, idp: DevIdp, sp_server: TestServer, name: str, refusal: str
):
    url = str(sp_server.make_url(f"/_authgate/saml/{name}/metadata"))
    status, page = await post(web_client, "/register/saml", {"metadata_url": url}, idp.form_token)
    assert (status, message_of(page)) == (502, refusal)


async def test_an_unreachable_metadata_url_is_refused(
    web_client: TestClient, idp: DevIdp, unused_tcp_port: int
):
    url = f"http://127.0.0.1:{unused_tcp_port}/_authgate/saml/gone/metadata"
    status, page = await post(web_client, "/register/saml", {"metadata_url": url}, idp.form_token)
    assert (status, message_of(page)) == (502, FETCH_FAILED)
    assert url not in page


@pytest.mark.parametrize(
    ("data", "what"),
    [
        ({"redirect_uri": ""}, "redirect URI"),
        ({"redirect_uri": "javascript:alert(1)"}, "redirect URI"),
        ({"redirect_uri": "http://127.0.0.1:4180/cb#alert(1)"}, "redirect URI"),
        ({"redirect_uri": "http://user@127.0.0.1:4180/cb"}, "redirect URI"),
        ({"redirect_uri": "http://127.0.0.1:99999/cb"}, "redirect URI"),
        ({"redirect_uri": "http://127.0.0.1/" + "a" * 2000}, "redirect URI"),
        (
            {"redirect_uri": REDIRECT, "post_logout_redirect_uri": "alert(1)"},
            "sign-out return URI",
        ),
    ],
)
async def test_a_bad_redirect_uri_registers_no_client(
    web_client: TestClient, idp: DevIdp, data: dict[str, str], what: str
):
    clients = dict(idp.oidc.clients)
    status, page = await post(web_client, "/register/oidc", data, idp.form_token)
    assert (status, message_of(page)) == (400, f"The {what} {BAD_URL}")
    assert "alert(1)" not in page
    assert idp.oidc.clients == clients


async def test_encryption_options_are_kept_per_sp_and_shown(
    web_client: TestClient, idp: DevIdp, keys: Path
):
    sp = Sp(keys, "encrypted")
    data = {"metadata_xml": sp.metadata.decode(), "encrypt_assertion": "1", "encrypt_name_id": "1"}
    status, page = await post(web_client, "/register/saml", data, idp.form_token)
    assert status == 200
    assert '<span id="sp-encryption">the assertion and the NameID</span>' in page
    assert idp.saml.options(sp.endpoints.entity_id) == SpOptions(True, True)
    data = {"metadata_xml": sp.metadata.decode()}
    status, page = await post(web_client, "/register/saml", data, idp.form_token)
    assert '<span id="sp-encryption">nothing</span>' in page
    assert idp.saml.options(sp.endpoints.entity_id) == SpOptions()


async def test_encryption_to_an_sp_without_an_encryption_certificate_is_refused(
    web_client: TestClient, idp: DevIdp, keys: Path
):
    sp = Sp(keys, "signing-only-sp", use="signing")
    data = {"metadata_xml": sp.metadata.decode(), "encrypt_name_id": "1"}
    status, page = await post(web_client, "/register/saml", data, idp.form_token)
    assert status == 400
    assert message_of(page) == (
        "The SP metadata has no encryption certificate, so this IdP cannot encrypt to it."
    )
    assert (await sso(web_client, sp))[0] == 400
