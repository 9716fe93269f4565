"""`scim.path`: the SCIM Tenant URL where a vendor guide puts it (`<external URL>/api/scim`).

The guide's URL must answer SCIM and nothing else: with the real listener, a
browser that happens to hold a session and asks for a SCIM path gets SCIM's
answer, never the application's page; the default path stops answering SCIM.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from authgate.app import create_app, front_site
from authgate.session.memory import MemoryStore
from authgate.settings import ConfigError
from authgate.web.state import STATE
from tests.conftest import config_file
from tests.integration.test_fast_path import new_session
from tests.rawhttp import read_response
from tests.scim_support import SCIM_JSON, bearer, provisioning_settings
from tests.servers import free_port

SCIM_PATH = "/api/scim"


@pytest.fixture
def settings(tmp_path: Path):
    return provisioning_settings(tmp_path / "audit.jsonl", scim={"path": SCIM_PATH})


async def test_scim_answers_at_the_configured_path_only(aiohttp_client, settings):
    client: TestClient = await aiohttp_client(create_app(settings, MemoryStore()))
    headers = await bearer(client)
    users = await client.get(SCIM_PATH + "/Users", headers=headers)
    assert users.status == 200
    config = await (await client.get(SCIM_PATH + "/ServiceProviderConfig", headers=headers)).json()
    assert config["meta"]["location"] == f"https://app.example.com{SCIM_PATH}/ServiceProviderConfig"
    old = await client.get("/_authgate/scim/v2/Users", headers={**headers, "Accept": SCIM_JSON})
    assert old.status == 404
    assert client.app[STATE].settings.scim_url == "https://app.example.com/api/scim"


async def test_a_session_cookie_on_a_scim_path_never_reaches_the_app(settings):
    app = create_app(settings, MemoryStore())
    port = free_port()
    async with front_site(app, f"127.0.0.1:{port}", False):
        st = app[STATE]
        session = await new_session(st)
        head = (
            f"GET {SCIM_PATH}/Users HTTP/1.1\r\nHost: app.example.com\r\n"
            f"Cookie: {st.cookies.session_name}={session.id}\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head.encode())
            resp = await read_response(reader)
        finally:
            writer.close()
    assert resp.status == 401
    assert resp.headers["Content-Type"].startswith(SCIM_JSON)


@pytest.mark.parametrize("path", ["api/scim", "/api/scim/", "/", "/api scim"])
def test_an_unusable_path_is_named_with_the_fix(tmp_path: Path, path: str):
    with pytest.raises(ConfigError) as refused:
        provisioning_settings(tmp_path / "audit.jsonl", scim={"path": path})
    assert "scim.path" in str(refused.value)
    assert "expected a path such as /api/scim (no trailing slash)" in str(refused.value)


def test_the_cli_prints_the_configured_tenant_url(tmp_path: Path, redis_url: str):
    config = config_file(tmp_path, redis_url, scim={"path": SCIM_PATH})
    command = ["scim", "token", "create", "--connection", "corp", "--config", str(config)]
    made = subprocess.run(
        [sys.executable, "-m", "authgate", *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert "Tenant URL: https://app.example.com/api/scim" in made.stdout
