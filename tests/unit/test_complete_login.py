"""The protocol-blind half of a login: policy, user, session, audit, metrics, status."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from authgate.app import build_state
from authgate.identity import Identity
from authgate.session.memory import MemoryStore
from authgate.web.client_info import CID, CLIENT, ClientInfo
from authgate.web.middlewares import error_pages
from authgate.web.signin import complete_login
from authgate.web.state import STATE
from tests.conftest import make_settings


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def state(audit_file: Path):
    settings = make_settings(
        "http://127.0.0.1:1",
        audit={"output": str(audit_file)},
        access={
            "allowed_domains": ["example.com"],
            "role_mappings": [{"group": "Admins", "roles": ["admin"]}],
        },
    )
    return build_state(settings, MemoryStore())


def request_for(state, cookie: str = ""):
    app = web.Application()
    app[STATE] = state
    headers = {"Accept": "text/html", **({"Cookie": cookie} if cookie else {})}
    req = make_mocked_request("GET", "/_authgate/oidc/corp/callback", headers=headers, app=app)
    req[CLIENT] = ClientInfo("203.0.113.9", "https", "app.example.com", False, "203.0.113.9")
    req[CID] = "cid-123"
    return req


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ident(**kw) -> Identity:
    fields = {
        "connection": "corp",
        "subject": "s1",
        "email": "alice@example.com",
        "email_verified": True,
        "name": "Alice",
        "groups": ("Admins",),
    }
    fields.update(kw)
    return Identity(**fields)


async def test_success_creates_session_sets_cookie_and_audits(state, audit_file):
    response = await complete_login(request_for(state), ident(), "/reports?q=1")
    assert response.status == 302
    assert response.headers["Location"] == "/reports?q=1"
    morsel = response.cookies[state.cookies.session_name]
    assert morsel["httponly"] and morsel["secure"] and morsel["samesite"] == "Lax"
    assert state.cookies.session_name == "__Host-authgate"
    session = await state.sessions.load(morsel.value)
    assert session is not None and session.roles == ("admin",)
    [event] = events(audit_file)
    assert event["event"] == "sso.login.success"
    assert event["connection"] == "corp" and event["ip"] == "203.0.113.9"
    assert event["correlation_id"] == "cid-123" and event["email"] == "alice@example.com"
    assert "last_success_at" in await state.status.get("corp")
    assert (
        state.metrics.registry.get_sample_value(
            "authgate_logins_total", {"connection": "corp", "result": "success", "reason": ""}
        )
        == 1
    )


async def test_each_login_gets_a_fresh_session_id(state):
    first = await complete_login(request_for(state), ident(), "/")
    sid = first.cookies[state.cookies.session_name].value
    cookie = f"{state.cookies.session_name}={sid}"
    second = await complete_login(request_for(state, cookie), ident(), "/")
    new_sid = second.cookies[state.cookies.session_name].value
    assert new_sid != sid
    assert await state.sessions.load(sid) is None, "the old session is ended at re-login"


async def test_open_redirect_after_login_goes_home(state):
    response = await complete_login(request_for(state), ident(), "//evil.example.net/x")
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        (ident(email="eve@evil.com"), "domain_not_allowed"),
        (ident(email_verified=False), "email_unverified"),
    ],
)
async def test_refusal_is_audited_counted_and_shown(state, audit_file, identity, reason):
    req = request_for(state)

    async def handler(request):
        return await complete_login(request, identity, "/")

    response = await error_pages(req, handler)
    assert response.status == 403
    assert f'<code id="reason">{reason}</code>' in response.text
    assert "cid-123" in response.text and "Traceback" not in response.text
    [event] = events(audit_file)
    assert event["event"] == "sso.login.failed" and event["reason"] == reason
    status = await state.status.get("corp")
    assert status["last_failure_reason"] == reason
    assert status["last_failure_correlation_id"] == "cid-123"
    assert (
        state.metrics.registry.get_sample_value(
            "authgate_logins_total", {"connection": "corp", "result": "failure", "reason": reason}
        )
        == 1
    )
    assert not await state.users.all_ids()


async def test_a_session_limit_already_passed_is_refused_as_expired(state, audit_file):
    req = request_for(state)

    async def handler(request):
        return await complete_login(request, ident(session_not_after=time.time() - 1), "/")

    response = await error_pages(req, handler)
    assert response.status == 400
    assert '<code id="reason">expired</code>' in response.text
    assert events(audit_file)[-1]["reason"] == "expired"
    assert not await state.users.all_ids()


async def test_a_user_retired_during_sign_in_gets_no_session(state, audit_file):
    """The retire lands after the user record was checked but before the session exists."""
    create = state.sessions.create

    async def create_then_retire(template):
        session = await create(template)
        user = await state.users.get(session.user_id)
        await state.users.set_active(user, False)
        return session

    state.sessions.create = create_then_retire
    req = request_for(state)

    async def handler(request):
        return await complete_login(request, ident(), "/")

    response = await error_pages(req, handler)
    assert response.status == 403
    assert '<code id="reason">user_disabled</code>' in response.text
    [user_id] = await state.users.all_ids()
    assert await state.sessions.count_for_user(user_id) == 0
    assert events(audit_file)[-1]["event"] == "sso.login.failed"
