"""authgate with one SAML connection `corp`, driven like a browser, for the SAML tests."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp.test_utils import TestClient
from lxml import etree

from authgate.settings import Settings, parse_settings
from authgate.web.state import STATE

PUBLIC_URL = "http://authgate.test"
SP_ENTITY = PUBLIC_URL + "/_authgate/saml/corp"
ACS_URL = SP_ENTITY + "/acs"
SLO_URL = SP_ENTITY + "/slo"
JSON = {"Accept": "application/json"}


def saml_settings(
    upstream_url: str,
    metadata_file: Path,
    redis_url: str | None = None,
    top: dict[str, Any] | None = None,
    **conn: Any,
) -> Settings:
    """authgate with one SAML connection `corp`; `conn` overrides connection keys."""
    connection: dict[str, Any] = {
        "id": "corp",
        "name": "Corp",
        "type": "saml",
        "idp_metadata_file": str(metadata_file),
    }
    connection.update(conn)
    store: dict[str, Any] = {"store": "memory"}
    if redis_url is not None:
        store = {"store": "redis", "redis": {"url": redis_url}}
    raw = {
        "public_url": PUBLIC_URL,
        "upstream": {"url": upstream_url},
        "session": store,
        "audit": {"output": "stdout"},
        "connections": [connection],
        **(top or {}),
    }
    return parse_settings(raw, "saml-test.yaml")


def decode_redirect(location: str, kind: str = "SAMLRequest") -> etree._Element:
    """The XML of an HTTP-Redirect binding message."""
    query = parse_qs(urlsplit(location).query)
    raw = zlib.decompress(base64.b64decode(query[kind][0]), -zlib.MAX_WBITS)
    return etree.fromstring(raw)


class SamlBrowser:
    """Starts logins at authgate and posts what an IdP would send back."""

    def __init__(self, gate: TestClient, conn: str = "corp") -> None:
        self.gate = gate
        self.conn = conn

    @property
    def state(self) -> Any:
        return self.gate.app[STATE]

    async def start(self, rd: str = "/app/page") -> str:
        """Begin a login; returns the AuthnRequest ID the response must answer."""
        resp = await self.gate.get(
            f"/_authgate/saml/{self.conn}/login", params={"rd": rd}, allow_redirects=False
        )
        assert resp.status == 302, await resp.text()
        request = decode_redirect(resp.headers["Location"])
        return request.get("ID")

    async def post(
        self, saml_response: str, relay_state: str | None = None, **kw: Any
    ) -> aiohttp.ClientResponse:
        form = {"SAMLResponse": saml_response}
        if relay_state is not None:
            form["RelayState"] = relay_state
        headers = kw.pop("headers", JSON)
        return await self.gate.post(
            f"/_authgate/saml/{self.conn}/acs",
            data=form,
            headers=headers,
            allow_redirects=False,
            **kw,
        )

    def login_cookie(self) -> str:
        name = self.state.cookies.login_name
        cookie = self.gate.session.cookie_jar.filter_cookies(self.gate.make_url("/")).get(name)
        assert cookie is not None
        return f"{name}={cookie.value}"

    async def whoami(self) -> aiohttp.ClientResponse:
        return await self.gate.get("/_authgate/userinfo", headers=JSON)
