"""The admin pages' forms, posted as a browser posts them: multipart, with the page's token.

The whole flow runs in Chromium in tests/e2e/test_browser_admin_connections.py;
here each form's fields, its token and a refusal that keeps what was typed.
"""

from __future__ import annotations

import hashlib
import re

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from authgate.app import create_app
from authgate.identity import Identity
from authgate.web.state import STATE
from tests.conftest import sign_in
from tests.integration.test_admin_connections import API, AUTH, ENTRA_METADATA, _settings

SAME_ORIGIN = {"Origin": "https://app.example.com", "Accept": "text/html"}
NEW = "/_authgate/admin/connections/new"


@pytest.fixture
async def admin(aiohttp_client, settings_factory, redis_url, master_key) -> TestClient:
    client = await aiohttp_client(create_app(_settings(settings_factory, redis_url, master_key)))
    identity = Identity(
        connection="corp", subject="ada", email="ada@example.com", email_verified=True,
        groups=("Admins",),
    )  # fmt: skip
    await sign_in(client, identity)
    return client


def token(client: TestClient) -> str:
    name = client.app[STATE].cookies.session_name
    sid = client.session.cookie_jar.filter_cookies(client.make_url("/"))[name].value
    return hashlib.sha256(b"authgate admin form\0" + sid.encode()).hexdigest()


def form(client: TestClient, **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in {"csrf": token(client), **fields}.items():
        data.add_field(name, value)
    return data


async def test_the_new_connection_form_takes_the_vendor_guide_fields(admin):
    fields = {
        "type": "saml",
        "name": "Entra",
        "id": "entra",
        "idp_metadata_xml": ENTRA_METADATA,
        "match_key": "attribute:eduPersonPrincipalName",
        "acs_urls": "/Shibboleth.sso/SAML2/POST\nhttps://app.corp.internal/saml/acs",
        "post_logout_url": "/login",
        "domains": "example.org, example.net",
        "role_mappings": "Admins = admin\nEng = editor, viewer",
        "organization": "acme",
    }
    resp = await admin.post(
        NEW, data=form(admin, **fields), headers=SAME_ORIGIN, allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    conn = admin.app[STATE].connections.get("entra").settings
    assert conn.match_key == "attribute:eduPersonPrincipalName"
    assert conn.acs_urls == ["/Shibboleth.sso/SAML2/POST", "https://app.corp.internal/saml/acs"]
    assert (conn.post_logout_url, conn.domains, conn.organization) == (
        "/login", ["example.org", "example.net"], "acme",
    )  # fmt: skip
    assert [(m.group, m.roles) for m in conn.role_mappings] == [
        ("Admins", ["admin"]), ("Eng", ["editor", "viewer"]),
    ]  # fmt: skip
    page = await (await admin.get("/_authgate/admin/connections/entra")).text()
    assert "https://app.example.com/Shibboleth.sso/SAML2/POST" in page


async def test_an_emptied_field_in_the_edit_form_goes_back_to_its_default(admin):
    """Before, an empty field was not sent, so the stored value silently stayed."""
    fields = {"type": "saml", "name": "Entra", "id": "entra", "idp_metadata_xml": ENTRA_METADATA,
              "post_logout_url": "/bye", "acs_urls": "/saml/acs", "match_key": "email",
              "name_id_format": "persistent", "response_binding": "artifact"}  # fmt: skip
    resp = await admin.post(NEW, data=form(admin, **fields), headers=SAME_ORIGIN)
    conn = admin.app[STATE].connections.get("entra").settings
    assert (conn.name_id_format, conn.response_binding) == ("persistent", "artifact")
    page = await (await admin.get("/_authgate/admin/connections/entra/edit")).text()
    assert '<option value="persistent" selected>' in page
    assert '<option value="artifact" selected>' in page
    emptied = {"type": "saml", "name": "Entra", "version": "1", "post_logout_url": "",
               "acs_urls": "", "match_key": "", "name_id_format": "", "response_binding": "post",
               "domains": "", "role_mappings": ""}  # fmt: skip
    resp = await admin.post(
        "/_authgate/admin/connections/entra/edit", data=form(admin, **emptied),
        headers=SAME_ORIGIN, allow_redirects=False,
    )  # fmt: skip
    assert resp.status == 303, await resp.text()
    conn = admin.app[STATE].connections.get("entra").settings
    assert (conn.post_logout_url, conn.acs_urls, conn.match_key) == (None, [], None)
    assert (conn.name_id_format, conn.response_binding) == ("unspecified", "post")
    assert admin.app[STATE].connections.get("entra").version == 2


async def test_a_patch_with_null_puts_a_setting_back_to_its_default(admin):
    body = {"type": "saml", "name": "Entra", "id": "entra", "idp_metadata_xml": ENTRA_METADATA,
            "post_logout_url": "/bye"}  # fmt: skip
    assert (await admin.post(API, json=body, headers=AUTH)).status == 201
    patch = {"version": 1, "post_logout_url": None}
    resp = await admin.patch(API + "/entra", json=patch, headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert admin.app[STATE].connections.get("entra").settings.post_logout_url is None


async def test_a_refused_form_keeps_what_was_typed_and_names_the_field(admin):
    fields = {"type": "saml", "name": "Entra", "id": "Bad Id", "idp_metadata_xml": ENTRA_METADATA,
              "domains": "example.org", "role_mappings": "Eng = editor"}  # fmt: skip
    resp = await admin.post(NEW, data=form(admin, **fields), headers=SAME_ORIGIN)
    text = await resp.text()
    assert resp.status == 200
    assert re.search(r'id="form-problem">id: expected a short lower-case id', text)
    assert 'value="Bad Id"' in text and 'value="example.org"' in text and "Eng = editor" in text
    assert "entra" not in {c.id for c in admin.app[STATE].connections}


async def test_a_form_without_its_token_is_refused(admin):
    data = aiohttp.FormData()
    for name, value in {"type": "saml", "name": "X", "idp_metadata_xml": ENTRA_METADATA}.items():
        data.add_field(name, value)
    resp = await admin.post(NEW, data=data, headers=SAME_ORIGIN)
    assert resp.status == 403
    assert "cross_origin_request" in await resp.text()
    assert [c.id for c in admin.app[STATE].connections] == ["corp"]
