"""Where the browser goes after sign-out: `rd` checked like login's, else the connection's
`post_logout_url`; OIDC end-session and SAML SLO carry it through the IdP and back."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from authgate.app import create_app
from authgate.session.memory import MemoryStore
from authgate.settings import ConfigError
from authgate.web.state import STATE
from tests.conftest import make_settings, sign_in
from tests.integration.test_saml_slo import signed_in, slo
from tests.saml_gate import SLO_URL, decode_redirect
from tests.saml_idp import redirect_query
from tests.simplesamlphp import TYPED

HTML = {"Accept": "text/html", **TYPED}
EVIL = ["https://evil.example/", "//evil.example/", "/\\evil.example/"]


def corp(**conn) -> dict:
    settings = make_settings("http://127.0.0.1:9")
    return {**settings.connections[0].model_dump(mode="json", exclude_defaults=True), **conn}


@pytest.fixture
def gate(aiohttp_client, settings_factory):
    async def make(**conn) -> TestClient:
        settings = settings_factory(connections=[corp(**conn)])
        return await aiohttp_client(create_app(settings, MemoryStore()))

    return make


async def logout(client: TestClient, rd: str | None = None, **headers):
    query = "?" + urlencode({"rd": rd}) if rd is not None else ""
    return await client.get(
        "/_authgate/logout" + query, allow_redirects=False, headers={**HTML, **headers}
    )


async def assert_signed_out_page(client: TestClient, resp, session_id: str) -> None:
    assert resp.status == 200
    assert "Location" not in resp.headers
    assert "Signed out" in await resp.text()
    assert await client.app[STATE].sessions.load(session_id) is None


async def test_rd_to_a_local_path_is_followed(gate):
    client = await gate()
    session = await sign_in(client)
    resp = await logout(client, "/login")
    assert resp.status == 302
    assert resp.headers["Location"] == "/login"
    assert await client.app[STATE].sessions.load(session.id) is None


@pytest.mark.parametrize("rd", EVIL)
async def test_rd_to_another_site_is_not_followed(gate, rd):
    client = await gate()
    session = await sign_in(client)
    await assert_signed_out_page(client, await logout(client, rd), session.id)


async def test_rd_to_an_allowed_host_is_followed(aiohttp_client, settings_factory):
    settings = settings_factory(access={"allowed_redirect_hosts": ["portal.example.com"]})
    client = await aiohttp_client(create_app(settings, MemoryStore()))
    await sign_in(client)
    resp = await logout(client, "https://portal.example.com/bye")
    assert resp.headers["Location"] == "https://portal.example.com/bye"


async def test_the_connections_post_logout_url_when_no_rd(gate):
    client = await gate(post_logout_url="/signed-out")
    await sign_in(client)
    assert (await logout(client)).headers["Location"] == "/signed-out"


async def test_a_safe_rd_wins_over_post_logout_url_and_an_unsafe_one_does_not(gate):
    client = await gate(post_logout_url="/signed-out")
    await sign_in(client)
    assert (await logout(client, "/login")).headers["Location"] == "/login"
    await sign_in(client)
    assert (await logout(client, "https://evil.example/")).headers["Location"] == "/signed-out"


async def test_without_a_session_rd_is_still_checked(gate):
    client = await gate()
    assert (await logout(client, "/login")).headers["Location"] == "/login"
    resp = await logout(client, "https://evil.example/")
    assert resp.status == 200
    assert "Location" not in resp.headers


async def test_the_confirmation_form_keeps_a_safe_rd_only(gate):
    client = await gate()
    session = await sign_in(client)
    asked = await logout(client, "/login", **{"Sec-Fetch-Site": "cross-site"})
    assert 'action="/_authgate/logout?rd=%2Flogin"' in await asked.text()
    asked = await logout(client, "https://evil.example/", **{"Sec-Fetch-Site": "cross-site"})
    page = await asked.text()
    assert "evil" not in page
    assert await client.app[STATE].sessions.load(session.id) is not None


def test_post_logout_url_on_a_foreign_host_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        make_settings(
            "http://127.0.0.1:9", connections=[corp(post_logout_url="https://evil.example/")]
        )
    assert "post_logout_url is on a host" in str(err.value)
    assert "access.allowed_redirect_hosts" in str(err.value)


@pytest.mark.parametrize("value", ["javascript:alert(1)", "ftp://app.example.com/", "login"])
def test_post_logout_url_must_be_a_path_or_an_http_url(value):
    with pytest.raises(ConfigError) as err:
        make_settings("http://127.0.0.1:9", connections=[corp(post_logout_url=value)])
    assert "post_logout_url: expected a local path such as /login" in str(err.value)


# --- through the IdP ---------------------------------------------------------------------------


async def test_oidc_end_session_returns_to_post_logout_url(oidc_gate, oidc_op):
    browser = await oidc_gate(post_logout_url="/login")
    assert (await browser.login()).status == 302
    resp = await browser.gate.get("/_authgate/logout?rd=/x", allow_redirects=False, headers=TYPED)
    target = URL(resp.headers["Location"])
    assert target.query["post_logout_redirect_uri"] == "http://authgate.test/login"
    assert "state" not in target.query


async def test_oidc_end_session_carries_rd_back_through_state(oidc_gate, oidc_op):
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    resp = await browser.gate.get(
        "/_authgate/logout?rd=/login", allow_redirects=False, headers=TYPED
    )
    target = URL(resp.headers["Location"])
    assert target.query["post_logout_redirect_uri"] == "http://authgate.test/_authgate/logout"
    assert target.query["state"] == "/login"
    back = await browser.idp.get(str(target), allow_redirects=False)
    returned = URL(back.headers["Location"])
    assert returned.query["state"] == "/login"
    done = await browser.gate.get(returned.path_qs, allow_redirects=False, headers=TYPED)
    assert done.headers["Location"] == "/login"


async def test_oidc_end_session_never_carries_an_unsafe_rd(oidc_gate, oidc_op):
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    query = urlencode({"rd": "https://evil.example/"})
    resp = await browser.gate.get(
        f"/_authgate/logout?{query}", allow_redirects=False, headers=TYPED
    )
    assert "state" not in URL(resp.headers["Location"]).query
    back = await browser.gate.get(
        "/_authgate/logout?state=https%3A%2F%2Fevil.example%2F", allow_redirects=False
    )
    assert back.status == 200
    assert "Location" not in back.headers


async def saml_logout_response(browser, saml_idp, rd: str, relay_back: str | None = None):
    await signed_in(browser, saml_idp)
    out = await browser.gate.get(
        "/_authgate/logout?" + urlencode({"rd": rd}), allow_redirects=False, headers=TYPED
    )
    location = out.headers["Location"]
    request = decode_redirect(location)
    sent_relay = parse_qs(urlsplit(location).query).get("RelayState", [None])[0]
    answer = saml_idp.logout_response(request.get("ID"), SLO_URL)
    relay = sent_relay if relay_back is None else relay_back
    back = redirect_query("SAMLResponse", answer, relay_state=relay, keys=saml_idp.keys)
    return sent_relay, await slo(browser, back, headers=HTML, allow_redirects=False)


async def test_saml_slo_returns_to_rd_through_relay_state(saml_gate, saml_idp, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys])
    sent, done = await saml_logout_response(browser, saml_idp, "/login")
    assert sent == "/login"
    assert done.status == 302
    assert done.headers["Location"] == "/login"


async def test_saml_slo_relay_state_to_another_site_is_not_followed(saml_gate, saml_idp, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys])
    _, done = await saml_logout_response(browser, saml_idp, "/login", "https://evil.example/")
    assert done.status == 200
    assert "Location" not in done.headers


async def test_saml_slo_falls_back_to_post_logout_url(saml_gate, saml_idp, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys], post_logout_url="/goodbye")
    sent, done = await saml_logout_response(browser, saml_idp, "https://evil.example/", "")
    assert sent == "/goodbye"
    assert done.headers["Location"] == "/goodbye"
