"""Interop with a certified OpenID Provider we did not write: node `oidc-provider`.

The provider runs as a real node process (tests/idp/oidc-provider, installed
by `npm ci` in `.ci/run`), authgate runs on a real loopback port in front of
the echo upstream, and one aiohttp session plays the browser across both:
log in with the provider's own login form, reach the upstream as that user,
log out (locally and at the provider's end_session_endpoint), log in again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc.jwk import RSAKey
from yarl import URL

from authgate.app import create_app
from authgate.secrets import MASTER_KEY_ENV, generate_key
from authgate.settings import parse_settings
from authgate.web.state import STATE
from tests.servers import free_port, require_binary, wait_for_port
from tests.simplesamlphp import TYPED

OP_DIR = Path(__file__).resolve().parents[1] / "idp" / "oidc-provider"
SECRET = "interop:secret%+ &="


class NodeProvider:
    """`node server.mjs PORT` with the clients given; killed by the fixture's finaliser."""

    def __init__(
        self, clients: list[dict[str, Any]], auth_methods: list[str] | None = None
    ) -> None:
        self.node = require_binary("node")
        if not (OP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"oidc-provider is not installed: run `npm ci` in {OP_DIR}")
        self.port = free_port()
        self.clients = clients
        self.auth_methods = auth_methods
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NodeProvider:
        env = {**os.environ, "OP_CLIENTS": json.dumps(self.clients)}
        if self.auth_methods is not None:
            env["OP_AUTH_METHODS"] = json.dumps(self.auth_methods)
        self.proc = subprocess.Popen(
            [self.node, "server.mjs", str(self.port)],
            cwd=OP_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port, timeout=20)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def gate_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def client_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"use": "sig", "kid": "authgate-client-1"})


def client_common(gate_port: int) -> dict[str, Any]:
    return {
        "post_logout_redirect_uris": [f"http://127.0.0.1:{gate_port}/_authgate/logout"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }


@pytest.fixture(scope="module")
def node_op(gate_port: int, client_key: RSAKey) -> Iterator[NodeProvider]:
    base = f"http://127.0.0.1:{gate_port}/_authgate"
    common = client_common(gate_port)
    provider = NodeProvider(
        [
            {
                "client_id": "authgate",
                "client_secret": SECRET,
                "redirect_uris": [f"{base}/oidc/corp/callback"],
                "token_endpoint_auth_method": "client_secret_basic",
                **common,
            },
            {
                "client_id": "authgate-post",
                "client_secret": SECRET,
                "redirect_uris": [f"{base}/oidc/post/callback"],
                "token_endpoint_auth_method": "client_secret_post",
                **common,
            },
            {
                "client_id": "authgate-jwt",
                "redirect_uris": [f"{base}/oidc/jwt/callback"],
                "token_endpoint_auth_method": "private_key_jwt",
                "token_endpoint_auth_signing_alg": "RS256",
                "jwks": {"keys": [client_key.as_dict(private=False)]},
                **common,
            },
        ]
    )
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def post_only_op(gate_port: int) -> Iterator[NodeProvider]:
    """A provider whose token endpoint accepts only client_secret_post, as discovery says."""
    provider = NodeProvider(
        [
            {
                "client_id": "authgate-discovered",
                "client_secret": SECRET,
                "redirect_uris": [
                    f"http://127.0.0.1:{gate_port}/_authgate/oidc/discovered/callback"
                ],
                "token_endpoint_auth_method": "client_secret_post",
                **client_common(gate_port),
            }
        ],
        auth_methods=["client_secret_post"],
    )
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture
async def gate(
    monkeypatch: pytest.MonkeyPatch,
    node_op: NodeProvider,
    post_only_op: NodeProvider,
    gate_port: int,
    client_key: RSAKey,
    redis_url: str,
    upstream: TestServer,
    tmp_path: Path,
) -> AsyncIterator[web.Application]:
    monkeypatch.setenv(MASTER_KEY_ENV, generate_key())
    key_file = tmp_path / "client-key.json"
    key_file.write_text(json.dumps(client_key.as_dict(private=True)))
    connection = {"type": "oidc", "issuer": node_op.issuer, "refresh": {"enabled": True}}
    settings = parse_settings(
        {
            "public_url": f"http://127.0.0.1:{gate_port}",
            "upstream": {"url": str(upstream.make_url("")).rstrip("/")},
            "session": {"store": "redis", "redis": {"url": redis_url}},
            "connections": [
                {
                    **connection,
                    "id": "corp",
                    "name": "Corp",
                    "client_id": "authgate",
                    "client_secret": SECRET,
                    "scopes": ["openid", "email", "profile", "groups", "offline_access"],
                },
                {
                    **connection,
                    "id": "post",
                    "name": "Post",
                    "client_id": "authgate-post",
                    "client_secret": SECRET,
                    "token_endpoint_auth_method": "client_secret_post",
                },
                {
                    **connection,
                    "id": "jwt",
                    "name": "JWT",
                    "client_id": "authgate-jwt",
                    "private_key_file": str(key_file),
                },
                {
                    "type": "oidc",
                    "issuer": post_only_op.issuer,
                    "id": "discovered",
                    "name": "Discovered",
                    "client_id": "authgate-discovered",
                    "client_secret": SECRET,
                },
            ],
        },
        "interop.yaml",
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", gate_port).start()
    yield app
    await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}
    ) as session:
        yield session


def form_action(html: str) -> str:
    match = re.search(r'<form[^>]*action="([^"]+)"', html)
    assert match, html
    return match.group(1).replace("&amp;", "&")


async def sign_in(
    browser: aiohttp.ClientSession, gate_port: int, conn: str, login: str
) -> aiohttp.ClientResponse:
    """Start at a protected page, fill in the provider's login form, land on the page."""
    gate = f"http://127.0.0.1:{gate_port}"
    page = await browser.get(f"{gate}/_authgate/oidc/{conn}/login", params={"rd": "/app/page"})
    html = await page.text()
    assert page.status == 200 and 'name="login"' in html, html
    action = str(page.url.join(URL(form_action(html))))
    form = {"prompt": "login", "login": login, "password": "anything"}
    return await browser.post(action, data=form)


async def upstream_view(resp: aiohttp.ClientResponse) -> dict[str, str]:
    assert resp.status == 200, await resp.text()
    assert resp.url.path == "/app/page"
    return dict((await resp.json())["headers"])


async def test_login_logout_and_login_again(browser, gate, gate_port, node_op):
    headers = await upstream_view(await sign_in(browser, gate_port, "corp", "alice"))
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-Email"] == "alice@example.com"
    assert headers["X-User-Name"] == "Interop alice"
    assert headers["X-Groups"] == "staff"
    assert headers["X-Auth-Connection"] == "corp"

    gate_url = f"http://127.0.0.1:{gate_port}"
    logout = await browser.get(f"{gate_url}/_authgate/logout", allow_redirects=False, headers=TYPED)
    assert logout.status == 302
    end_session = URL(logout.headers["Location"])
    assert str(end_session.with_query(None)) == f"{node_op.issuer}/session/end"
    assert end_session.query["client_id"] == "authgate"
    assert "id_token_hint" in end_session.query

    confirm = await browser.get(end_session)
    html = await confirm.text()
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', html)
    assert xsrf, html
    done = await browser.post(
        str(confirm.url.join(URL(form_action(html)))),
        data={"xsrf": xsrf.group(1), "logout": "yes"},
    )
    assert done.status == 200
    assert done.url.path == "/_authgate/logout"
    assert "signed out" in (await done.text()).lower()

    anonymous = await browser.get(f"{gate_url}/app/page", allow_redirects=False)
    assert anonymous.status == 302
    assert URL(anonymous.headers["Location"]).path == "/_authgate/login"

    again = await upstream_view(await sign_in(browser, gate_port, "corp", "bob"))
    assert again["X-User"] == "bob@example.com"


async def test_client_secret_post_and_private_key_jwt(browser, gate, gate_port):
    post = await upstream_view(await sign_in(browser, gate_port, "post", "carol"))
    assert post["X-Auth-Connection"] == "post"
    browser.cookie_jar.clear()
    jwt = await upstream_view(await sign_in(browser, gate_port, "jwt", "dave"))
    assert jwt["X-User"] == "dave@example.com"
    assert jwt["X-Auth-Connection"] == "jwt"


async def test_client_authentication_from_discovery(browser, gate, gate_port, post_only_op):
    async with aiohttp.ClientSession() as http:
        discovery = f"{post_only_op.issuer}/.well-known/openid-configuration"
        doc = await (await http.get(discovery)).json()
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_post"]
    headers = await upstream_view(await sign_in(browser, gate_port, "discovered", "frank"))
    assert headers["X-User"] == "frank@example.com"
    assert headers["X-Auth-Connection"] == "discovered"


async def test_refresh_renews_the_session_with_a_rotated_refresh_token(browser, gate, gate_port):
    await upstream_view(await sign_in(browser, gate_port, "corp", "erin"))
    st = gate[STATE]
    sid = next(c.value for c in browser.cookie_jar if c.key == st.cookies.session_name)
    session = await st.sessions.load(sid)
    assert session is not None
    sealed = session.protocol_data["refresh_token"]
    assert sealed.startswith("v1:")
    assert session.protocol_data["refresh_sealed"] is True
    await st.sessions.update(replace(session, refresh_at=0))
    resp = await browser.get(f"http://127.0.0.1:{gate_port}/app/page")
    assert (await upstream_view(resp))["X-User"] == "erin@example.com"
    renewed = await st.sessions.load(sid)
    assert renewed is not None
    box = st.connections.engine("corp").box
    rotated = box.open(renewed.protocol_data["refresh_token"], "refresh_token")
    assert rotated != box.open(sealed, "refresh_token")
    assert renewed.refresh_at > 0
