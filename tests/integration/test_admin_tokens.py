"""Admin API tokens made with `authgate admin token`: stored hashed, usable at once, revocable.

The CLI runs as an operator runs it (a subprocess against the same Redis as
the app); the app is a real aiohttp app on that store. Every refusal is the
admin API's 401 `invalid_token`, whatever the forged token looked like.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from authgate.app import create_app
from authgate.scim.tokens import ScimTokens
from authgate.settings import Settings, load_settings
from authgate.tokens import AdminTokens
from authgate.web.state import STATE
from tests.conftest import config_file, redis_kv

STATUS = "/_authgate/admin/api/status"


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    return config_file(tmp_path, redis_url, audit={"output": str(tmp_path / "audit.jsonl")})


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authgate", "admin", "token", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
async def app(aiohttp_client: Callable[..., Any], config: Path) -> TestClient:
    settings: Settings = load_settings(config)
    return await aiohttp_client(create_app(settings, redis_kv(settings.session.redis.url)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def audit_events(config: Path) -> list[dict[str, Any]]:
    path = config.with_name("audit.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_created_token_works_at_once_is_listed_without_its_secret_and_revoked(
    app: TestClient, config: Path
):
    made = cli(config, "create", "--description", "deploy pipeline")
    assert made.returncode == 0, made.stderr
    token = made.stdout.split()[-1]
    assert token.startswith("agadm_")
    assert (await app.get(STATUS, headers=bearer(token))).status == 200

    listed = cli(config, "list")
    assert listed.returncode == 0
    [line] = listed.stdout.splitlines()
    token_id, _, description = line.split("\t")
    assert description == "deploy pipeline"
    assert token not in listed.stdout
    stored = await app.app[STATE].kv.get(f"admin-token-id:{token_id}")
    assert stored == hashlib.sha256(token.encode()).hexdigest().encode()

    assert cli(config, "revoke", token_id).returncode == 0
    refused = await app.get(STATUS, headers=bearer(token))
    assert refused.status == 401
    assert (await refused.json())["error"] == "invalid_token"
    assert cli(config, "revoke", token_id).returncode == 1
    events = audit_events(config)
    tokens = [(e["event"], e["token_id"]) for e in events if e["event"].startswith("admin.token")]
    assert tokens == [("admin.token.created", token_id), ("admin.token.revoked", token_id)]
    viewed = next(e for e in events if e["event"] == "admin.status.viewed")
    assert viewed["actor"] == f"admin-token:{token_id}"


async def test_forged_tokens_are_refused(app: TestClient):
    st = app.app[STATE]
    _, real = await AdminTokens(st.kv).create(description="real")
    _, scim = await ScimTokens(st.kv).create("corp")
    forged = {
        "right-prefix-random": "agadm_" + "A" * 43,
        "real-with-a-byte-changed": real[:-1] + ("A" if real[-1] != "A" else "B"),
        "real-with-padding": real + "x" * 200,
        "scim-token": scim,
        "no-prefix": real.removeprefix("agadm_"),
        "basic-scheme": "",
    }
    for name, token in forged.items():
        headers = bearer(token) if token else {"Authorization": "Basic " + real}
        resp = await app.get(STATUS, headers=headers)
        assert resp.status == 401, name
        assert (await resp.json())["error"] == "invalid_token", name
        assert "agadm_" not in await resp.text(), name
    assert (await app.get(STATUS, headers=bearer(real))).status == 200


async def test_an_admin_token_is_not_a_scim_token(app: TestClient):
    _, real = await AdminTokens(app.app[STATE].kv).create()
    resp = await app.get("/_authgate/scim/v2/Users", headers={"Authorization": f"Bearer {real}"})
    assert resp.status == 401
