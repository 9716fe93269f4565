"""Refresh: a due session renews its claims with the refresh token, under a Redis lock.

Sessions are made due by moving `refresh_at` into the past in the store (no
sleeping). The test provider rotates refresh tokens, so a second use of the
same token would be refused: concurrent requests prove the lock by causing
exactly one refresh grant.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from authgate.secrets import MASTER_KEY_ENV, generate_key
from authgate.web.session_refresh import refresh_lock
from authgate.web.state import STATE
from tests.conftest import redis_kv


async def signed_in(oidc_gate, **conn):
    browser = await oidc_gate(refresh={"enabled": True, "every": "10m"}, **conn)
    assert (await browser.login()).status == 302
    return browser


def session_id(browser) -> str:
    st = browser.gate.app[STATE]
    return next(
        c.value for c in browser.gate.session.cookie_jar if c.key == st.cookies.session_name
    )


async def make_due(browser):
    st = browser.gate.app[STATE]
    session = await st.sessions.load(session_id(browser))
    await st.sessions.update(replace(session, refresh_at=0))
    return session


async def page(browser):
    return await browser.gate.get("/app/page", headers={"Accept": "application/json"})


def refresh_grants(op) -> int:
    return sum(r["form"].get("grant_type") == "refresh_token" for r in op.token_requests)


async def test_refresh_renews_claims_and_roles(oidc_gate, oidc_op):
    browser = await signed_in(oidc_gate)
    await make_due(browser)
    oidc_op.user["groups"] = ["Engineering", "Admins"]
    oidc_op.user["name"] = "Alice Renamed"
    resp = await page(browser)
    headers = dict((await resp.json())["headers"])
    assert headers["X-Groups"] == "Engineering,Admins"
    assert headers["X-User-Name"] == "Alice Renamed"
    assert refresh_grants(oidc_op) == 1
    session = await browser.gate.app[STATE].sessions.load(session_id(browser))
    assert session.refresh_at > 0


async def test_a_session_not_yet_due_is_not_refreshed(oidc_gate, oidc_op):
    browser = await signed_in(oidc_gate)
    for _ in range(3):
        assert (await page(browser)).status == 200
    assert refresh_grants(oidc_op) == 0


async def test_concurrent_requests_refresh_once(oidc_gate, oidc_op):
    browser = await signed_in(oidc_gate)
    await make_due(browser)
    oidc_op.token_delay = 0.3
    answers = await asyncio.gather(*(page(browser) for _ in range(8)))
    assert [r.status for r in answers] == [200] * 8
    assert refresh_grants(oidc_op) == 1
    assert (await page(browser)).status == 200


async def test_refreshed_id_token_for_another_subject_ends_the_session(oidc_gate, oidc_op, capsys):
    browser = await signed_in(oidc_gate)
    await make_due(browser)
    oidc_op.id_token_claims = lambda c: {**c, "sub": "someone-else"}
    oidc_op.userinfo_answer = lambda c: {**c, "sub": "someone-else"}
    assert (await page(browser)).status == 401
    st = browser.gate.app[STATE]
    assert await st.sessions.load(session_id(browser)) is None
    assert (await st.status.get("corp"))["last_failure_reason"] == "id_token_invalid"
    assert '"event":"session.revoked"' in capsys.readouterr().out


async def test_refreshed_id_token_from_another_issuer_ends_the_session(oidc_gate, oidc_op):
    browser = await signed_in(oidc_gate)
    await make_due(browser)
    oidc_op.id_token_claims = lambda c: {**c, "iss": "https://evil.example.com"}
    assert (await page(browser)).status == 401
    st = browser.gate.app[STATE]
    assert (await st.status.get("corp"))["last_failure_reason"] == "issuer_mismatch"


async def test_a_revoked_refresh_token_ends_the_session(oidc_gate, oidc_op):
    browser = await signed_in(oidc_gate)
    await make_due(browser)
    oidc_op.refresh_tokens.clear()
    assert (await page(browser)).status == 401
    st = browser.gate.app[STATE]
    assert (await st.status.get("corp"))["last_failure_reason"] == "idp_error"


async def test_policy_is_checked_again_on_refresh(oidc_gate, oidc_op):
    browser = await signed_in(oidc_gate)
    await make_due(browser)
    oidc_op.user["email_verified"] = False
    assert (await page(browser)).status == 401
    st = browser.gate.app[STATE]
    assert (await st.status.get("corp"))["last_failure_reason"] == "email_unverified"


async def test_an_unreachable_provider_postpones_the_refresh(oidc_gate, oidc_op):
    browser = await signed_in(oidc_gate)
    await make_due(browser)
    oidc_op.token_answer = lambda a: (503, {"error": "temporarily_unavailable"})
    assert (await page(browser)).status == 200
    session = await browser.gate.app[STATE].sessions.load(session_id(browser))
    assert session.refresh_at > 0


async def test_refresh_tokens_are_sealed_when_a_master_key_is_set(oidc_gate, oidc_op, monkeypatch):
    monkeypatch.setenv(MASTER_KEY_ENV, generate_key())
    browser = await signed_in(oidc_gate)
    session = await browser.gate.app[STATE].sessions.load(session_id(browser))
    sealed = session.protocol_data["refresh_token"]
    assert sealed.startswith("v1:")
    assert sealed not in oidc_op.refresh_tokens
    await make_due(browser)
    assert (await page(browser)).status == 200
    assert refresh_grants(oidc_op) == 1


async def test_without_refresh_enabled_no_refresh_token_is_kept(oidc_gate, oidc_op):
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    session = await browser.gate.app[STATE].sessions.load(session_id(browser))
    assert "refresh_token" not in session.protocol_data
    assert session.refresh_at is None


async def test_a_holder_that_outlived_the_lock_leaves_the_next_holders_lock(redis_url):
    """Replica A stalls past LOCK_TTL, B takes the lock; A finishing must not free B's lock."""
    a, b = redis_kv(redis_url), redis_kv(redis_url)
    key = "refresh-lock:test-outlived"
    b_lock = refresh_lock(b, key)
    try:
        async with refresh_lock(a, key) as a_holds:
            assert a_holds
            async with refresh_lock(b, key) as b_waits:
                assert not b_waits, "one holder at a time"
            await a.expire(key, 0.001)  # A's lock runs out while A still works
            await asyncio.sleep(0.01)
            assert await b_lock.__aenter__(), "B takes the expired lock"
        assert await b.get(key) is not None, "A's release left B's lock in place"
        async with refresh_lock(a, key) as a_again:
            assert not a_again, "so nobody else refreshes while B does"
        await b_lock.__aexit__(None, None, None)
        assert await b.get(key) is None, "B releases its own lock"
    finally:
        await a.close()
        await b.close()
