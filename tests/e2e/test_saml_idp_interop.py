"""Interop with an independent SAML IdP: SimpleSAMLphp (Debian package), started on loopback.

authgate runs as a real HTTP server on Redis, loads the IdP's metadata from
its URL, sends a signed AuthnRequest (HTTP-Redirect), and takes the IdP's
own signed response at the ACS; the upstream sees `X-User`. Then single
logout both ways (SP- and IdP-initiated, signed messages verified on both
sides) and a second login.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from authgate.app import create_app
from authgate.settings import parse_settings
from authgate.web.state import STATE
from tests.conftest import UPSTREAM_HITS
from tests.servers import free_port
from tests.simplesamlphp import Browser, SimpleSamlPhp

USER, PASSWORD = "alice", "alice-password"
READY_WITHIN = 15.0


class Deployment:
    """authgate (real server) in front of the echo upstream, trusting one SimpleSAMLphp."""

    def __init__(self, idp: SimpleSamlPhp, base: str, runner: web.AppRunner) -> None:
        self.idp = idp
        self.base = base
        self.runner = runner

    @property
    def app(self) -> web.Application:
        return self.runner.app


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


@pytest.fixture
async def deploy(
    redis_url: str, sp_keys: dict[str, Any], counted_upstream: TestServer
) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[SimpleSamlPhp, web.AppRunner]] = []

    async def make(encrypt_assertions: bool = False) -> Deployment:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        sp = base + "/_authgate/saml/ssp"
        idp = SimpleSamlPhp(
            sp,
            sp + "/acs",
            sp + "/slo",
            _read(sp_keys["cert_file"]),
            encrypt_assertions=encrypt_assertions,
        ).start()
        settings = parse_settings(
            {
                "public_url": base,
                "upstream": {"url": str(counted_upstream.make_url("")).rstrip("/")},
                "session": {"store": "redis", "redis": {"url": redis_url}},
                "audit": {"output": "stdout"},
                "connections": [
                    {
                        "id": "ssp",
                        "name": "SimpleSAMLphp",
                        "type": "saml",
                        "idp_metadata_url": idp.metadata_url,
                        "sp_keys": [sp_keys],
                        "sign_requests": True,
                        "name_id_format": "emailAddress",
                    }
                ],
            },
            "interop.yaml",
        )
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        started.append((idp, runner))
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return Deployment(idp, base, runner)

    yield make
    for idp, runner in started:
        await runner.cleanup()
        idp.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    client = Browser()
    yield client
    await client.close()


async def connection_ready(browser: Browser, deployment: Deployment) -> None:
    """The metadata is fetched in the background from start-up; readyz says when it is in."""
    deadline = time.monotonic() + READY_WITHIN
    while True:
        ready = await browser.http.get(deployment.base + "/_authgate/readyz")
        line = (await ready.json())["checks"]["connection:ssp"]
        if line == "ok":
            return
        assert time.monotonic() < deadline, line
        await asyncio.sleep(0.1)


async def login(browser: Browser, deployment: Deployment, path: str = "/app/page") -> dict:
    """From a protected page, through the IdP's login form, back to the page."""
    at_idp = await browser.follow(deployment.base + path)
    assert at_idp.url.port == deployment.idp.port, await at_idp.text()
    post_page = await browser.sign_in_at_idp(at_idp, USER, PASSWORD)
    page = await browser.submit_auto_post(post_page)
    assert page.status == 200, (await page.text())[:2000] + deployment.idp.log()[-3000:]
    return await page.json()


async def test_login_slo_and_second_login(deploy, browser, counted_upstream):
    deployment = await deploy()
    await connection_ready(browser, deployment)

    first = await login(browser, deployment)
    headers = dict(first["headers"])
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-User-Name"] == "Alice Example"
    assert headers["X-Auth-Connection"] == "ssp"
    assert set(headers["X-Groups"].split(",")) == {"member", "staff"}
    assert counted_upstream.app[UPSTREAM_HITS] == ["/app/page"]

    signed_out = await browser.follow(deployment.base + "/_authgate/logout", typed=True)
    assert signed_out.status == 200
    assert signed_out.url.path == "/_authgate/saml/ssp/slo"
    assert "signed out" in (await signed_out.text()).lower()
    after = await browser.http.get(
        deployment.base + "/app/page", headers={"Accept": "application/json"}
    )
    assert after.status == 401

    second = await login(browser, deployment, "/app/again")
    assert dict(second["headers"])["X-User"] == "alice@example.com"
    assert counted_upstream.app[UPSTREAM_HITS] == ["/app/page", "/app/again"]


async def test_idp_initiated_logout_revokes_the_session(deploy, browser, counted_upstream):
    deployment = await deploy()
    await login(browser, deployment)
    st = deployment.app[STATE]
    user = await st.users.by_link("ssp", "alice@example.com")
    assert user is not None and await st.sessions.count_for_user(user.id) == 1

    done = await browser.follow(
        deployment.idp.base
        + "/saml2/idp/SingleLogoutService.php?ReturnTo="
        + deployment.base
        + "/_authgate/login"
    )
    assert done.status == 200
    assert await st.sessions.count_for_user(user.id) == 0
    after = await browser.http.get(
        deployment.base + "/app/page", headers={"Accept": "application/json"}
    )
    assert after.status == 401
    assert counted_upstream.app[UPSTREAM_HITS] == ["/app/page"]


async def test_encrypted_assertions_from_the_idp(deploy, browser):
    deployment = await deploy(encrypt_assertions=True)
    page = await login(browser, deployment)
    assert dict(page["headers"])["X-User"] == "alice@example.com"
