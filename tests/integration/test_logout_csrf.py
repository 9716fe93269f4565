"""Sign-out cannot be triggered by another site: a link or a form elsewhere gets a question.

A cross-site `<img src=/_authgate/logout>` or auto-submitted form would
otherwise end anyone's session (a nuisance, and the first step of a login
CSRF). Only a navigation the person started, a request from authgate's own
origin, or the confirmation form with its token signs out.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient

from authgate.web.signin import logout_token
from authgate.web.state import STATE
from tests.conftest import sign_in

OWN = "https://app.example.com"
HTML = {"Accept": "text/html"}
_TOKEN = re.compile(r'name="token" value="([0-9a-f]{64})"')


async def alive(client: TestClient, session_id: str) -> bool:
    return await client.app[STATE].sessions.load(session_id) is not None


async def assert_asked(client: TestClient, response, session_id: str) -> str:
    """The confirmation page, the session untouched and no cookie cleared."""
    assert response.status == 200
    page = await response.text()
    assert 'id="confirm-sign-out"' in page
    assert "Set-Cookie" not in response.headers
    assert await alive(client, session_id)
    token = _TOKEN.search(page)
    assert token is not None
    return token.group(1)


async def assert_signed_out(client: TestClient, response, session_id: str) -> None:
    assert response.status == 200
    assert "Signed out" in await response.text()
    assert "Set-Cookie" in response.headers
    assert not await alive(client, session_id)


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {},
    ],
    ids=["cross-site", "same-site-other-origin", "no-fetch-metadata"],
)
async def test_a_get_not_started_by_the_person_is_asked(authgate: TestClient, headers):
    session = await sign_in(authgate)
    resp = await authgate.get("/_authgate/logout", headers={**HTML, **headers})
    token = await assert_asked(authgate, resp, session.id)
    assert token == logout_token(session)


@pytest.mark.parametrize("site", ["same-origin", "none"])
async def test_a_get_from_our_pages_or_the_address_bar_signs_out(authgate: TestClient, site):
    session = await sign_in(authgate)
    resp = await authgate.get("/_authgate/logout", headers={**HTML, "Sec-Fetch-Site": site})
    await assert_signed_out(authgate, resp, session.id)


async def test_the_confirmation_form_signs_out(authgate: TestClient):
    session = await sign_in(authgate)
    asked = await authgate.get("/_authgate/logout", headers={"Sec-Fetch-Site": "cross-site"})
    token = await assert_asked(authgate, asked, session.id)
    resp = await authgate.post("/_authgate/logout", data={"token": token})
    await assert_signed_out(authgate, resp, session.id)


@pytest.mark.parametrize(
    "form",
    [{}, {"token": ""}, {"token": "0" * 64}, {"token": "x"}],
    ids=["none", "empty", "wrong", "short"],
)
async def test_a_cross_site_form_without_the_token_is_asked(authgate: TestClient, form):
    session = await sign_in(authgate)
    headers = {**HTML, "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
    resp = await authgate.post("/_authgate/logout", data=form, headers=headers)
    await assert_asked(authgate, resp, session.id)


async def test_another_sessions_token_does_not_sign_out(authgate: TestClient):
    victim = await sign_in(authgate)
    other = await authgate.app[STATE].sessions.create(replace(victim))
    resp = await authgate.post(
        "/_authgate/logout",
        data={"token": logout_token(other)},
        headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    )
    assert other.id != victim.id
    await assert_asked(authgate, resp, victim.id)


async def test_a_repeated_token_field_is_refused(authgate: TestClient):
    session = await sign_in(authgate)
    token = logout_token(session)
    resp = await authgate.post(
        "/_authgate/logout",
        data=f"token={token}&token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded", **HTML},
    )
    assert resp.status == 400
    assert "invalid_request" in await resp.text()
    assert await alive(authgate, session.id)


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "same-origin"}, {"Origin": OWN}, {"Referer": OWN + "/app/settings"}],
    ids=["fetch-metadata", "origin", "referer"],
)
async def test_a_post_from_our_own_origin_signs_out(authgate: TestClient, headers):
    """The application's own sign-out button (a form on its pages) keeps working."""
    session = await sign_in(authgate)
    resp = await authgate.post("/_authgate/logout", headers={**HTML, **headers})
    await assert_signed_out(authgate, resp, session.id)


async def test_without_a_session_there_is_nothing_to_ask(authgate: TestClient):
    """The IdP's post-logout redirect comes back cross-site, after the session is gone."""
    resp = await authgate.get("/_authgate/logout", headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status == 200
    assert "Signed out" in await resp.text()
