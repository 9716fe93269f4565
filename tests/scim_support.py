"""Shared pieces of the provisioning tests: settings, a SCIM client, fixtures, login."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from authgate.identity import Identity
from authgate.scim.tokens import ScimTokens
from authgate.settings import Settings
from authgate.web.client_info import CID, CLIENT, ClientInfo
from authgate.web.signin import complete_login
from authgate.web.state import STATE, State
from tests.conftest import make_settings

FIXTURES = Path(__file__).parent / "fixtures" / "scim"
SCIM = "/_authgate/scim/v2"
SCIM_JSON = "application/scim+json"
ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"


def fixture(provider: str, name: str, **ids: str) -> Any:
    """A documented request body, with the documents' example ids swapped for real ones."""
    text = json.dumps(json.loads((FIXTURES / f"{provider}.json").read_text())[name])
    for example, real in ids.items():
        text = text.replace(example, real)
    return json.loads(text)


def oidc(conn_id: str, provisioning: str = "preprovisioned", **extra: Any) -> dict[str, Any]:
    return {
        "id": conn_id,
        "name": conn_id.title(),
        "type": "oidc",
        "issuer": f"https://{conn_id}.idp.example.com",
        "client_id": "authgate",
        "client_secret": "s3cret",
        "provisioning": provisioning,
        **extra,
    }


def provisioning_settings(audit: Path, redis_url: str | None = None, **overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "audit": {"output": str(audit)},
        "connections": [oidc("corp"), oidc("partner", "jit")],
        "access": {"role_mappings": [{"group": "Admins", "roles": ["admin"]}]},
    }
    if redis_url:
        raw["session"] = {"store": "redis", "redis": {"url": redis_url}}
    raw.update(overrides)
    return make_settings("http://127.0.0.1:9", **raw)


def events(path: Path, prefix: str = "") -> list[dict[str, Any]]:
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in found if e["event"].startswith(prefix)]


async def bearer(client: TestClient, connection: str = "corp") -> dict[str, str]:
    _, secret = await ScimTokens(client.app[STATE].kv).create(connection, "test")
    return {"Authorization": f"Bearer {secret}", "Content-Type": SCIM_JSON}


async def scim_json(response: Any, status: int) -> Any:
    """The body of a SCIM answer after checking its status and media type."""
    text = await response.text()
    assert response.status == status, text
    if status in (204, 304):
        assert text == ""
        return None
    assert response.headers["Content-Type"].startswith(SCIM_JSON)
    return json.loads(text)


# What a library's message looks like: pydantic's text and links, scim2-models' phrasing.
LIBRARY_TEXT = re.compile(
    r"pydantic|validation error|Input should|Field '|\[type=|For further information|Traceback",
    re.IGNORECASE,
)


async def scim_error(response: Any, status: int, scim_type: str | None) -> dict[str, Any]:
    """A SCIM Error body with this status and scimType, in authgate's words only."""
    body = await scim_json(response, status)
    assert body["schemas"] == [ERROR_URN]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type
    assert not LIBRARY_TEXT.search(json.dumps(body)), body
    return body


def login_request(st: State) -> web.Request:
    app = web.Application()
    app[STATE] = st
    req = make_mocked_request(
        "GET", "/_authgate/oidc/corp/callback", headers={"Accept": "text/html"}, app=app
    )
    req[CLIENT] = ClientInfo("203.0.113.9", "https", "app.example.com", False, "203.0.113.9")
    req[CID] = "cid-provisioning"
    return req


async def login(st: State, identity: Identity) -> web.Response:
    """The protocol-blind login path, as a SAML or OIDC callback would run it."""
    return await complete_login(login_request(st), identity, "/")


def session_id(st: State, response: web.Response) -> str:
    return response.cookies[st.cookies.session_name].value
