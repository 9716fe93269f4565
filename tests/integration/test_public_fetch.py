"""A setup-link holder's metadata URL is fetched from public addresses only, without redirects.

The holder is outside the operator's team, so the URL they set must not make
authgate reach into the operator's network. A raw TCP listener counts the
connections authgate opens: the holder's URL naming it opens none, while the
same URL from an admin does (the control that shows the listener would see
one).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from authgate.connection_requests import changed_document
from authgate.connection_store import ConnectionDocument
from authgate.protocols import saml_source
from authgate.protocols.saml_crypto import XmlSec
from authgate.protocols.saml_metadata import MetadataError
from authgate.protocols.saml_source import MetadataSource
from authgate.public_addresses import NOT_PUBLIC, is_public, url_problem
from authgate.public_fetch import PublicResolver, public_session
from authgate.session.memory import MemoryStore
from authgate.settings import SamlConnection
from authgate.web.state import STATE
from tests.integration.test_admin_connections import ENTRA_METADATA, create
from tests.integration.test_setup_links import SAME_ORIGIN, client, make_link, path_of

__all__ = ["client"]
UNREACHABLE_TEXT = "could not be fetched"


class Listener:
    """A TCP port that counts who connects and closes at once."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]


@pytest.fixture
async def listener() -> AsyncIterator[tuple[Listener, int]]:
    found = Listener()
    port = await found.start()
    yield found, port
    assert found.server is not None
    found.server.close()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_public_means_globally_routable_unicast(address, public):
    assert is_public(address) is public


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example.com/metadata",
        "https://127.0.0.1/metadata",
        "https://[::1]:8443/metadata",
        "https://[::ffff:169.254.169.254]/latest/meta-data",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5:6379/",
        "file:///etc/passwd",
    ],
)
def test_a_url_for_an_outsider_must_be_https_at_a_public_address(url):
    assert url_problem(url) == NOT_PUBLIC


def test_a_public_https_url_passes_and_names_wait_for_the_resolver():
    assert url_problem("https://login.microsoftonline.com/t/federationmetadata.xml") is None
    assert url_problem("https://localhost/metadata") is None


async def test_the_resolver_drops_every_address_that_is_not_public():
    with pytest.raises(OSError, match="no public address"):
        await PublicResolver().resolve("localhost", 443)
    allowed = await PublicResolver(allowed=lambda _: True).resolve("localhost", 443)
    assert {r["host"] for r in allowed} & {"127.0.0.1", "::1"}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/metadata",
        "https://127.0.0.1:{port}/metadata",
        "https://[::ffff:127.0.0.1]:{port}/metadata",
        "https://localhost:{port}/metadata",
    ],
    ids=["plain http", "loopback literal", "mapped loopback", "name of a loopback host"],
)
async def test_a_holder_cannot_make_authgate_connect_inside_the_network(client, listener, url):
    found, port = listener
    link = await make_link(client)
    form = {"version": "1", "idp_metadata_url": url.format(port=port)}
    page = await client.post(path_of(link), data=form, headers=SAME_ORIGIN)
    text = await page.text()
    assert page.status == 200
    assert NOT_PUBLIC in text or UNREACHABLE_TEXT in text
    assert str(port) not in text.replace(form["idp_metadata_url"], "")
    assert found.accepted == 0
    assert client.app[STATE].connections.get("acme").version == 1


async def test_an_admin_may_name_an_internal_host(client, listener):
    """The control: the same name from an admin is connected to (and fails only on TLS)."""
    found, port = listener
    body = {
        "type": "saml",
        "name": "Internal",
        "id": "internal",
        "idp_metadata_url": f"https://localhost:{port}/metadata",
    }
    resp = await create(client, body)
    assert resp.status == 400
    assert found.accepted >= 1


def _public_only(url: str) -> SamlConnection:
    conn = SamlConnection.model_validate(
        {"id": "acme", "name": "Acme", "type": "saml", "idp_metadata_url": url}
    )
    return conn.model_copy(update={"idp_metadata_public_only": True})


@pytest.fixture
async def redirecting() -> AsyncIterator[tuple[TestServer, list[str]]]:
    seen: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        seen.append(request.path)
        raise web.HTTPFound("/metadata")

    async def metadata(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text=ENTRA_METADATA, content_type="application/samlmetadata+xml")

    app = web.Application()
    app.router.add_get("/moved", moved)
    app.router.add_get("/metadata", metadata)
    server = TestServer(app)
    await server.start_server()
    yield server, seen
    await server.close()


async def test_a_redirect_is_not_followed_for_an_outsiders_url(redirecting, monkeypatch):
    """Loopback is let through here only so a local server can redirect; the rule under
    test is that the redirect target is never fetched."""
    server, seen = redirecting
    monkeypatch.setattr(saml_source, "public_session", partial(public_session, allowed=bool))
    url = str(server.make_url("/moved"))
    async with aiohttp.ClientSession() as http:
        source = MetadataSource(_public_only(url), http, MemoryStore(), XmlSec())
        with pytest.raises(MetadataError) as refused:
            await source._read()
        assert refused.value.summary == "HTTP 302"
        assert seen == ["/moved"]
        follows = MetadataSource(_public_only(url).model_copy(
            update={"idp_metadata_public_only": False}
        ), http, MemoryStore(), XmlSec())  # fmt: skip
        assert b"EntityDescriptor" in await follows._read()
        assert seen == ["/moved", "/moved", "/metadata"]


def test_the_settings_refuse_a_public_only_url_that_is_not():
    with pytest.raises(ValidationError, match="idp_metadata_url: must be reachable at a public"):
        SamlConnection.model_validate(
            {
                "id": "acme",
                "name": "Acme",
                "type": "saml",
                "idp_metadata_url": "https://10.0.0.5/metadata",
                "idp_metadata_public_only": True,
            }
        )


def test_an_admin_replacing_the_idp_side_drops_the_public_only_mark():
    settings = {
        "name": "Acme",
        "idp_metadata_url": "https://idp.acme.example/metadata",
        "idp_metadata_public_only": True,
    }
    doc = ConnectionDocument(id="acme", type="saml", settings=settings, version=2)
    kept = changed_document(doc, {"name": "Acme Corp"}, None, "admin")  # type: ignore[arg-type]
    assert kept.settings["idp_metadata_public_only"] is True
    replaced = changed_document(
        doc, {"idp_metadata_url": "https://idp.internal/metadata"}, None, "admin"
    )  # type: ignore[arg-type]
    assert "idp_metadata_public_only" not in replaced.settings
