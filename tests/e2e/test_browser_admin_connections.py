"""A SAML connection made in the admin pages, end to end, in headless Chromium.

Two authgate replicas share one real redis-server; the second (B) is started
before the connection exists and is never restarted or told anything but
what the store carries. The admin works on replica A: creates the
connection, uploads the development IdP's metadata, copies the SP metadata
URL into the IdP's own registration page, runs the test sign-in (which
shows the identity and headers without signing anyone in), activates it.
A person then signs in through it and uses the app through replica B; an
edited role mapping shows in B's next request, and deleting the connection
ends the person's session there. Pages are saved under
test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, Page, expect

from authgate.app import create_app
from authgate.devidp import DevIdp, DevIdpConfig
from authgate.devidp import create_app as create_idp_app
from authgate.identity import Identity
from authgate.policy import roles_for
from authgate.secrets import generate_key
from authgate.session.sessions import Session
from authgate.web.state import STATE, State
from tests.browser import async_chromium, screenshot_path
from tests.conftest import make_settings
from tests.servers import free_port, require_binary

ADMIN = Identity(
    connection="corp", subject="admin-1", email="admin@corp.example", email_verified=True,
    name="Ada Admin", groups=("Admins",),
)  # fmt: skip


@dataclass(frozen=True)
class Stack:
    a_url: str
    b_url: str
    idp_url: str
    a: State
    metadata_file: Path
    admin_cookie: str


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def stack(
    tmp_path: Path, redis_url: str, upstream: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    require_binary("xmlsec1")
    monkeypatch.delenv("AUTHGATE_MASTER_KEY", raising=False)
    key = tmp_path / "master.key"
    key.write_text(generate_key())
    a_port, b_port, idp_port = free_port(), free_port(), free_port()
    a_url, idp_url = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{idp_port}"
    settings = make_settings(
        str(upstream.make_url("")).rstrip("/"),
        public_url=a_url,
        session={"store": "redis", "redis": {"url": redis_url}},
        secrets={"master_key_file": str(key)},
        access={"role_mappings": [{"group": "Admins", "roles": ["admin"], "connection": "corp"}]},
    )
    idp = await asyncio.to_thread(DevIdp.create, DevIdpConfig(base_url=idp_url), tmp_path)
    metadata_file = tmp_path / "devidp-metadata.xml"
    metadata_file.write_bytes(idp.saml.metadata())
    apps = [create_app(settings), create_app(settings)]
    runners = [await _serve(apps[0], a_port), await _serve(apps[1], b_port)]
    runners.append(await _serve(create_idp_app(idp), idp_port))
    cookie = await admin_session(apps[0][STATE])
    try:
        yield Stack(
            a_url, f"http://127.0.0.1:{b_port}", idp_url, apps[0][STATE], metadata_file, cookie
        )
    finally:
        for runner in runners:
            await runner.cleanup()


async def admin_session(st: State) -> str:
    """The admin's session, made through the session API (signing the admin in is not
    what this test is about); its id goes into the browser as the cookie."""
    user = await st.users.admit(ADMIN, "jit")
    session = await st.sessions.create(
        Session(
            user_id=user.id,
            connection="corp",
            subject=ADMIN.subject,
            username="ada",
            email=ADMIN.email,
            name=ADMIN.name,
            groups=ADMIN.groups,
            roles=roles_for(ADMIN.groups, st.connections.rules("corp")),
            created_at=0,
            last_seen=0,
            expires_at=0,
        )
    )
    return session.id


@pytest.fixture
async def browser() -> AsyncIterator[BrowserContext]:
    async with async_chromium() as context:
        yield context


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=screenshot_path(name), full_page=True)


async def idp_sign_in(page: Page, email: str) -> None:
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Sign in to continue")
    await page.locator(f"input[type=radio][value='{email}']").check()
    await page.get_by_label("Password").fill("demo")
    await page.locator("#sign-in").click()


async def upstream_headers(page: Page, url: str) -> dict[str, str]:
    await page.goto(url)
    body = json.loads(await page.locator("body").inner_text())
    return {k.lower(): v for k, v in body["headers"]}


async def signs_in_then_follows_the_admin(
    stack: Stack, admin: Page, button: str, email: str, new_mapping: str, version: str
) -> None:
    """A person signs in through the new connection and uses the app through replica B; the
    admin's role-mapping change shows in B's next request; deleting ends the session there."""
    async with async_chromium() as person_browser:
        person = await person_browser.new_page()
        await person.goto(stack.b_url + "/_authgate/login?rd=/")
        await person.get_by_role("link", name=f"Log in using {button}").click()
        await idp_sign_in(person, email)
        await person.wait_for_url(stack.a_url + "/")
        headers = await upstream_headers(person, stack.b_url + "/")
        assert (headers["x-email"], headers["x-roles"]) == (email, "editor")

        await admin.locator("#edit").click()
        await admin.get_by_label("Group to role mappings").fill(new_mapping)
        await admin.locator("#save").click()
        await expect(admin.locator("#conn-status")).to_contain_text(version)
        assert (await upstream_headers(person, stack.b_url + "/"))["x-roles"] == "owner"

        await admin.locator("#confirm-delete").check()
        await admin.locator("#delete").click()
        await expect(admin.locator("#connections")).not_to_contain_text(button)
        await shot(admin, "admin-connection-deleted")
        await person.goto(stack.b_url + "/")
        # Signed out: sent to sign in again (the config file's connection), never to the app.
        assert person.url.startswith(stack.b_url + "/_authgate/oidc/corp/login")
        assert email not in await person.content()


async def test_a_saml_connection_made_in_the_admin_pages_signs_people_in_on_every_replica(
    stack: Stack, browser: BrowserContext
):
    await browser.add_cookies(
        [{"name": "authgate", "value": stack.admin_cookie, "url": stack.a_url}]
    )
    admin = await browser.new_page()
    await admin.goto(stack.a_url + "/_authgate/admin/")
    await admin.locator("#new-saml").click()
    await admin.get_by_label("Name (shown on the sign-in button)").fill("Development IdP")
    await admin.get_by_label("Connection id (optional)").fill("devidp")
    await admin.get_by_label("or upload the metadata file").set_input_files(stack.metadata_file)
    await admin.get_by_label("Email domains routed to this connection").fill("example.com")
    await admin.get_by_label("Group to role mappings").fill("users = editor")
    await shot(admin, "admin-connection-new")
    await admin.locator("#save").click()
    await expect(admin.locator("#conn-status")).to_contain_text("Inactive")
    metadata_url = await admin.locator("#sp-metadata_url").inner_text()
    assert metadata_url == stack.a_url + "/_authgate/saml/devidp/metadata"
    await expect(admin.locator("button[data-copy='sp-acs_url']")).to_be_visible()
    await shot(admin, "admin-connection-created")

    idp_page = await browser.new_page()
    await idp_page.goto(stack.idp_url + "/")
    await idp_page.get_by_label("SP metadata URL").fill(metadata_url)
    await idp_page.locator("#register-saml-submit").click()
    await expect(idp_page.locator("#sp-entity-id")).to_have_text(
        stack.a_url + "/_authgate/saml/devidp"
    )

    await admin.locator("#test-signin").click()
    await idp_sign_in(admin, "bob@example.com")
    await expect(admin.locator("#test-outcome")).to_contain_text("would be let in")
    await expect(admin.locator("#test-headers")).to_contain_text("editor")
    await shot(admin, "admin-connection-test-signin")
    assert await stack.a.users.list_users("devidp") == []

    await admin.get_by_role("link", name="Back to the connection").click()
    await admin.locator("#activate").click()
    await expect(admin.locator("#conn-status")).to_contain_text("Active")

    await signs_in_then_follows_the_admin(
        stack, admin, "Development IdP", "bob@example.com", "users = owner", "version 3"
    )


async def test_an_oidc_connection_made_in_the_admin_pages_signs_people_in_on_every_replica(
    stack: Stack, browser: BrowserContext
):
    cookie = {"name": "authgate", "value": stack.admin_cookie, "url": stack.a_url}
    await browser.add_cookies([cookie])
    admin = await browser.new_page()
    await admin.goto(stack.a_url + "/_authgate/admin/")
    await admin.locator("#new-oidc").click()
    await admin.get_by_label("Name (shown on the sign-in button)").fill("Development OIDC")
    await admin.get_by_label("Connection id (optional)").fill("devoidc")
    await admin.get_by_label("Issuer URL").fill(stack.idp_url + "/oidc")
    await admin.get_by_label("Client id").fill("to-be-registered")
    await admin.get_by_label("Client secret").fill("to-be-registered")
    await admin.get_by_label("Group to role mappings").fill("engineering = editor")
    await admin.locator("#save").click()
    redirect_uri = await admin.locator("#sp-redirect_uri").inner_text()
    assert redirect_uri == stack.a_url + "/_authgate/oidc/devoidc/callback"

    idp_page = await browser.new_page()
    await idp_page.goto(stack.idp_url + "/")
    await idp_page.get_by_label("Redirect URI").fill(redirect_uri)
    await idp_page.locator("#register-oidc-submit").click()
    client_id = await idp_page.locator("#oidc-client-id").inner_text()
    client_secret = await idp_page.locator("#oidc-client-secret").inner_text()

    await admin.locator("#edit").click()
    await admin.get_by_label("Client id").fill(client_id)
    await admin.get_by_label("Client secret (leave empty to keep the current one)").fill(
        client_secret
    )
    await admin.locator("#save").click()
    await expect(admin.locator("#conn-status")).to_contain_text("version 2")
    await admin.locator("#test-signin").click()
    await idp_sign_in(admin, "dave@partner.example")
    await expect(admin.locator("#test-outcome")).to_contain_text("would be let in")
    await expect(admin.locator("#test-headers")).to_contain_text("editor")
    await shot(admin, "admin-oidc-test-signin")
    await admin.get_by_role("link", name="Back to the connection").click()

    # The test sign-in tells the verdict a real sign-in would get, provisioning included.
    await admin.locator("#edit").click()
    await admin.locator("#provisioning").select_option("preprovisioned")
    await admin.locator("#save").click()
    await expect(admin.locator("#conn-status")).to_contain_text("version 3")
    await admin.locator("#test-signin").click()
    await idp_sign_in(admin, "dave@partner.example")
    await expect(admin.locator("#test-outcome")).to_contain_text("user_not_provisioned")
    await admin.get_by_role("link", name="Back to the connection").click()
    await admin.locator("#edit").click()
    await admin.locator("#provisioning").select_option("jit")
    await admin.locator("#save").click()
    await expect(admin.locator("#conn-status")).to_contain_text("version 4")

    await admin.locator("#activate").click()
    await expect(admin.locator("#conn-status")).to_contain_text("Active")

    await signs_in_then_follows_the_admin(
        stack, admin, "Development OIDC", "dave@partner.example", "engineering = owner", "version 6"
    )
