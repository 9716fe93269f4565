"""Admin page and API: who gets in, what a cross-origin write cannot do, what an admin sees.

Every refusal is checked twice: the exact status and reason code, and that the
store is unchanged afterwards (the user still active, the session still live).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from authgate.app import create_app
from authgate.errors import PolicyDenied
from authgate.identity import Identity
from authgate.session.memory import MemoryStore
from authgate.settings import ConfigError, Settings, parse_settings
from authgate.web.origin import origin_of
from authgate.web.state import STATE
from tests.conftest import cookie_header, sign_in
from tests.readiness import check, wait_for

TOKEN = "4f1c0e9b7a3d52c8e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6"
ADMIN = "/_authgate/admin"
ORIGIN = "https://app.example.com"
BROWSER = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
ALICE = Identity(
    connection="corp", subject="sub-alice", email="alice@example.com", email_verified=True,
    name="Alice Example", groups=("Engineering",),
)  # fmt: skip
ROOT = Identity(
    connection="corp", subject="sub-root", email="root@example.com", email_verified=True,
    name="Root Admin", groups=("Ops",),
)  # fmt: skip


class Gate:
    """One authgate app with an audit file, plus helpers to inspect what changed."""

    def __init__(self, client: TestClient, audit: Path) -> None:
        self.client = client
        self.audit = audit
        self.st = client.app[STATE]

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = self.audit.read_text().splitlines() if self.audit.exists() else []
        return [e for e in map(json.loads, lines) if e["event"] == name]

    async def user(self, email: str) -> Any:
        return await self.st.users.by_email(email)

    async def live(self, sid: str) -> bool:
        return await self.st.sessions.load(sid) is not None


@pytest.fixture
def make_gate(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Settings], tmp_path: Path
) -> Callable[..., Any]:
    async def make(admin: dict[str, Any] | None = None, **overrides: Any) -> Gate:
        audit = tmp_path / "audit.log"
        settings = settings_factory(
            admin=admin if admin is not None else {"token": TOKEN},
            audit={"output": str(audit)},
            **overrides,
        )
        return Gate(await aiohttp_client(create_app(settings, MemoryStore())), audit)

    return make


@pytest.fixture
async def gate(make_gate: Callable[..., Any]) -> Gate:
    return await make_gate()


async def two_users(gate: Gate) -> tuple[str, str]:
    """Alice (a plain user, signed in) and an admin session; returns both session ids."""
    alice = await sign_in(gate.client, ALICE)
    root = await sign_in(gate.client, ROOT, roles=("admin",))
    return alice.id, root.id


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- who gets in -------------------------------------------------------------------------


async def test_browser_without_session_is_sent_to_sign_in(gate: Gate) -> None:
    resp = await gate.client.get(ADMIN + "/", headers=BROWSER, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/_authgate/login?rd=%2F_authgate%2Fadmin%2F"
    assert gate.events("admin.page.viewed") == []


async def test_api_without_session_gets_401(gate: Gate) -> None:
    resp = await gate.client.get(ADMIN + "/api/status")
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthenticated"


async def test_write_without_session_gets_401_and_changes_nothing(gate: Gate) -> None:
    alice, _ = await two_users(gate)
    gate.client.session.cookie_jar.clear()
    user = await gate.user("alice@example.com")
    resp = await gate.client.post(f"{ADMIN}/api/users/{user.id}/retire", headers={"Origin": ORIGIN})
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthenticated"
    assert (await gate.user("alice@example.com")).active
    assert await gate.live(alice)


async def test_signed_in_user_without_admin_role_is_refused(gate: Gate) -> None:
    alice = await sign_in(gate.client, ALICE)
    page = await gate.client.get(ADMIN + "/", headers=BROWSER)
    assert page.status == 403
    assert 'id="reason">admin_role_required<' in await page.text()
    api = await gate.client.get(ADMIN + "/api/users")
    assert api.status == 403
    assert (await api.json())["error"] == "admin_role_required"
    denied = gate.events("admin.denied")
    assert [e["reason"] for e in denied] == ["admin_role_required"] * 2
    assert denied[0]["actor"] == "alice@example.com"
    assert await gate.live(alice.id)


async def test_non_admin_cannot_retire_even_from_our_own_origin(gate: Gate) -> None:
    alice = await sign_in(gate.client, ALICE)
    user = await gate.user("alice@example.com")
    resp = await gate.client.post(f"{ADMIN}/api/users/{user.id}/retire", headers={"Origin": ORIGIN})
    assert resp.status == 403
    assert (await resp.json())["error"] == "admin_role_required"
    assert (await gate.user("alice@example.com")).active
    assert await gate.live(alice.id)
    assert gate.events("admin.user.retired") == []


async def test_admin_role_name_comes_from_the_config(make_gate: Callable[..., Any]) -> None:
    gate = await make_gate(admin={"role": "ops"})
    await sign_in(gate.client, ROOT, roles=("admin",))
    refused = await gate.client.get(ADMIN + "/api/status")
    assert refused.status == 403
    assert (await refused.json())["error"] == "admin_role_required"
    await sign_in(gate.client, ROOT, roles=("ops",))
    assert (await gate.client.get(ADMIN + "/api/status")).status == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token-wrong-token-wrong-token",
        "Bearer " + TOKEN[:-1],
        "Bearer " + TOKEN + "0",
        "Bearer " + TOKEN.upper(),
        "Bearer ",
        "Bearer",
        "Basic " + TOKEN,
        TOKEN,
        "Bearer " + TOKEN + " extra",
    ],
)
async def test_wrong_bearer_token_gets_401(gate: Gate, authorization: str) -> None:
    resp = await gate.client.get(ADMIN + "/api/status", headers={"Authorization": authorization})
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_token"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert gate.events("admin.denied")[0]["reason"] == "invalid_token"


async def test_wrong_token_is_not_rescued_by_an_admin_cookie(gate: Gate) -> None:
    alice, _ = await two_users(gate)
    user = await gate.user("alice@example.com")
    resp = await gate.client.post(
        f"{ADMIN}/api/users/{user.id}/retire",
        headers={"Origin": ORIGIN, **bearer("x" * 64)},
    )
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_token"
    assert (await gate.user("alice@example.com")).active
    assert await gate.live(alice)


async def test_no_token_configured_means_no_token_accepted(make_gate: Callable[..., Any]) -> None:
    gate = await make_gate(admin={})
    resp = await gate.client.get(ADMIN + "/api/status", headers=bearer(TOKEN))
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_token"


async def test_token_configured_as_sha256_works(make_gate: Callable[..., Any]) -> None:
    gate = await make_gate(admin={"token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()})
    assert (await gate.client.get(ADMIN + "/api/status", headers=bearer(TOKEN))).status == 200
    wrong = await gate.client.get(ADMIN + "/api/status", headers=bearer(TOKEN[::-1]))
    assert wrong.status == 401


async def test_scheme_name_is_case_insensitive(gate: Gate) -> None:
    resp = await gate.client.get(
        ADMIN + "/api/status", headers={"Authorization": "bearer " + TOKEN}
    )
    assert resp.status == 200


async def test_admin_disabled_answers_not_found(make_gate: Callable[..., Any]) -> None:
    gate = await make_gate(admin={"enabled": False, "token": TOKEN})
    resp = await gate.client.get(ADMIN + "/api/status", headers=bearer(TOKEN))
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


# ---- cross-site request forgery -----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {},
        {"Referer": "https://evil.example/_authgate/admin/"},
        {"Origin": "http://app.example.com"},
        {"Origin": "https://app.example.com.evil.example"},
        {"Origin": "https://app.example.com:8443"},
        {"Origin": "https://evil.example", "Referer": ORIGIN + "/_authgate/admin/"},
        {"Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"},
        {"Origin": ORIGIN, "Sec-Fetch-Site": "same-site"},
        {"Referer": "not a url"},
    ],
    ids=[
        "foreign-origin", "null-origin", "no-origin-no-referer", "foreign-referer",
        "scheme-downgrade", "suffix-host", "other-port", "origin-wins-over-referer",
        "fetch-cross-site", "fetch-same-site", "garbage-referer",
    ],
)  # fmt: skip
async def test_cross_origin_write_is_refused_and_changes_nothing(
    gate: Gate, headers: dict[str, str]
) -> None:
    alice, _ = await two_users(gate)
    user = await gate.user("alice@example.com")
    for action in ("retire", "revoke-sessions"):
        resp = await gate.client.post(f"{ADMIN}/api/users/{user.id}/{action}", headers=headers)
        assert resp.status == 403
        assert (await resp.json())["error"] == "cross_origin_request"
    assert (await gate.user("alice@example.com")).active
    assert await gate.live(alice)
    assert gate.events("admin.user.retired") == []
    assert gate.events("admin.user.sessions_revoked") == []
    assert {e["reason"] for e in gate.events("admin.denied")} == {"cross_origin_request"}


def test_origin_normalisation() -> None:
    assert origin_of("https://App.Example.com/x?y") == "https://app.example.com:443"
    assert origin_of("https://app.example.com:443") == "https://app.example.com:443"
    assert origin_of("http://app.example.com") == "http://app.example.com:80"
    assert origin_of("null") is None
    assert origin_of("javascript:alert(1)") is None
    assert origin_of("https://app.example.com:99999") is None
    assert origin_of("https://") is None


# ---- what an admin can do -----------------------------------------------------------------


async def test_retire_deactivates_revokes_and_audits(gate: Gate) -> None:
    alice, _ = await two_users(gate)
    second = await sign_in(gate.client, ALICE)
    await sign_in(gate.client, ROOT, roles=("admin",))
    user = await gate.user("alice@example.com")
    resp = await gate.client.post(f"{ADMIN}/api/users/{user.id}/retire", headers={"Origin": ORIGIN})
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["revoked_sessions"] == 2
    assert body["user"]["active"] is False
    assert body["user"]["sessions"] == 0
    assert not await gate.live(alice)
    assert not await gate.live(second.id)
    gate.client.session.cookie_jar.clear()
    userinfo = await gate.client.get(
        "/_authgate/userinfo", headers=cookie_header(gate.client, alice)
    )
    assert userinfo.status == 401
    with pytest.raises(PolicyDenied) as refused:
        await gate.st.users.admit(ALICE, "jit")
    assert refused.value.reason == "user_disabled"
    [event] = gate.events("admin.user.retired")
    assert event["user_id"] == user.id
    assert event["actor"] == "root@example.com"
    assert event["actor_kind"] == "session"
    assert event["revoked_sessions"] == 2
    assert event["correlation_id"] == resp.headers["X-Request-Id"]


async def test_same_origin_referer_without_origin_is_accepted(gate: Gate) -> None:
    await two_users(gate)
    user = await gate.user("alice@example.com")
    resp = await gate.client.post(
        f"{ADMIN}/api/users/{user.id}/revoke-sessions",
        headers={"Referer": "https://app.example.com:443/_authgate/admin/?q=alice"},
    )
    assert resp.status == 200
    assert (await resp.json())["revoked_sessions"] == 1


async def test_token_writes_need_no_origin(gate: Gate) -> None:
    alice = await sign_in(gate.client, ALICE)
    gate.client.session.cookie_jar.clear()
    user = await gate.user("alice@example.com")
    resp = await gate.client.post(
        f"{ADMIN}/api/users/{user.id}/revoke-sessions", headers=bearer(TOKEN)
    )
    assert resp.status == 200
    assert (await resp.json())["revoked_sessions"] == 1
    assert (await gate.user("alice@example.com")).active
    assert not await gate.live(alice.id)
    [event] = gate.events("admin.user.sessions_revoked")
    assert event["actor_kind"] == "token"


async def test_unknown_user_is_404(gate: Gate) -> None:
    for method, path in (("GET", ""), ("POST", "/retire"), ("POST", "/revoke-sessions")):
        resp = await gate.client.request(
            method, f"{ADMIN}/api/users/nobody{path}", headers=bearer(TOKEN)
        )
        assert resp.status == 404
        assert (await resp.json())["error"] == "unknown_user"


async def test_form_post_from_the_page_redirects_back_with_a_notice(gate: Gate) -> None:
    await two_users(gate)
    user = await gate.user("alice@example.com")
    resp = await gate.client.post(
        f"{ADMIN}/api/users/{user.id}/retire?q=alice",
        data={"confirm": "yes"},
        headers={**BROWSER, "Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/_authgate/admin/?q=alice&notice=retired&count=1"
    page = await gate.client.get(resp.headers["Location"], headers=BROWSER)
    html = await page.text()
    assert "The user was retired (deactivated); 1 active session(s) revoked." in html
    assert "Retired" in html


async def test_search_by_email_name_and_limits(gate: Gate) -> None:
    for n, name in enumerate(("Bob Builder", "Carol Danvers", "Dave Bowman")):
        first = name.split()[0].lower()
        await gate.st.users.create("corp", f"sub-{n}", f"{first}@Example.com", name)
    headers = bearer(TOKEN)
    by_email = await (await gate.client.get(ADMIN + "/api/users?q=CAROL@", headers=headers)).json()
    assert [u["email"] for u in by_email["users"]] == ["carol@Example.com"]
    by_name = await (await gate.client.get(ADMIN + "/api/users?q=bow", headers=headers)).json()
    assert [u["display_name"] for u in by_name["users"]] == ["Dave Bowman"]
    limited = await (await gate.client.get(ADMIN + "/api/users?limit=2", headers=headers)).json()
    assert (limited["total"], limited["truncated"], len(limited["users"])) == (3, True, 2)
    assert [u["email"] for u in limited["users"]] == ["bob@Example.com", "carol@Example.com"]
    for bad in ("limit=0", "limit=501", "limit=abc", "limit=-1", "q=" + "x" * 201):
        resp = await gate.client.get(f"{ADMIN}/api/users?{bad}", headers=headers)
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_request"
    assert [e["query"] for e in gate.events("admin.users.searched")] == ["CAROL@", "bow", ""]


async def test_status_shows_last_failure_sessions_and_readiness(
    make_gate: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, oidc_op: Any
) -> None:
    monkeypatch.delenv("AUTHGATE_MASTER_KEY", raising=False)
    gate = await make_gate(
        connections=[
            {"id": "corp", "name": "Corp", "type": "oidc", "issuer": oidc_op.issuer,
             "client_id": "authgate", "client_secret": "s3cret"},
            {"id": "locked", "name": "Locked", "type": "oidc", "issuer": "https://idp.example.org",
             "client_id": "authgate", "client_secret_encrypted": "not-a-sealed-value"},
            {"id": "off", "name": "Off", "type": "oidc", "issuer": "https://idp.example.net",
             "client_id": "authgate", "client_secret": "s3cret", "enabled": False},
        ],
    )  # fmt: skip
    await wait_for(gate.client, lambda _, body: check(body) == "ok", "corp's provider not loaded")
    await two_users(gate)
    await gate.st.status.failure("corp", "domain_not_allowed", "cid-42")
    await gate.st.status.success("corp")
    body = await (await gate.client.get(ADMIN + "/api/status", headers=bearer(TOKEN))).json()
    assert body["active_sessions"] == 2
    assert body["users"] == {"total": 2, "active": 2}
    corp, locked, off = body["connections"]
    assert corp["ready"] is True
    assert corp["last_failure"]["reason"] == "domain_not_allowed"
    assert corp["last_failure"]["correlation_id"] == "cid-42"
    assert corp["last_failure"]["at"].endswith("Z")
    assert corp["last_success_at"].endswith("Z")
    assert locked["ready"] is False
    assert locked["problem"].startswith("decrypt_failed")
    assert locked["last_failure"] is None
    assert off == {**off, "ready": False, "problem": "disabled in the configuration"}


async def test_page_escapes_what_users_and_idps_control(gate: Gate) -> None:
    await sign_in(gate.client, ROOT, roles=("admin",))
    await gate.st.users.create("corp", "sub-x", "x@example.com", "<script>alert(1)</script>")
    await gate.st.status.failure("corp", "<b>reason</b>", "<i>cid</i>")
    resp = await gate.client.get(ADMIN + "/?q=%3Cscript%3E", headers=BROWSER)
    assert resp.status == 200
    html = await resp.text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;reason&lt;/b&gt;" in html
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"


async def test_page_lists_connections_sessions_and_users(gate: Gate) -> None:
    await two_users(gate)
    await gate.st.status.failure("corp", "domain_not_allowed", "cid-7")
    resp = await gate.client.get(ADMIN, headers=BROWSER)
    assert resp.status == 200
    assert str(resp.url).endswith("/_authgate/admin/")
    html = await resp.text()
    assert 'id="active-sessions">2<' in html
    assert "domain_not_allowed" in html and "cid-7" in html
    assert "alice@example.com" in html and "root@example.com" in html
    assert [e["actor"] for e in gate.events("admin.page.viewed")] == ["root@example.com"]


# ---- configuration ------------------------------------------------------------------------


def admin_config(**admin: Any) -> Settings:
    return parse_settings(
        {"public_url": ORIGIN, "upstream": {"url": "http://127.0.0.1:8080"}, "admin": admin},
        "authgate.yaml",
    )


@pytest.mark.parametrize(
    ("admin", "message"),
    [
        ({"token": "short"}, "admin.token: the admin token must be at least 32 characters"),
        ({"token": ""}, "admin.token: the admin token must be at least 32 characters"),
        ({"token_sha256": "abc"}, "admin.token_sha256: expected 64 hex digits"),
        ({"token": TOKEN, "token_sha256": "0" * 64}, "admin: set token or token_sha256, not both"),
        ({"role": ""}, "admin.role: "),
        ({"tokens": TOKEN}, "admin.tokens: unknown key"),
    ],
)
def test_bad_admin_config_is_refused(admin: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        admin_config(**admin)
    assert any(p.startswith("authgate.yaml: " + message) for p in err.value.problems)


def test_admin_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHGATE_ADMIN_TOKEN", TOKEN)
    assert admin_config(token="${AUTHGATE_ADMIN_TOKEN}").admin.token == TOKEN
    monkeypatch.delenv("AUTHGATE_ADMIN_TOKEN")
    with pytest.raises(ConfigError) as err:
        admin_config(token="${AUTHGATE_ADMIN_TOKEN}")
    assert "environment variable AUTHGATE_ADMIN_TOKEN is not set" in err.value.problems[0]


# ---- CSV import through the API ----------------------------------------------------------

CSV = b"ExternalId,Email,DisplayName,Roles\next-1,one@example.com,One,editor\next-2,,Two,\n"


async def test_csv_import_adds_users_and_reports_per_row(gate: Gate) -> None:
    url = f"{ADMIN}/api/connections/corp/users/import"
    resp = await gate.client.post(url, data=CSV, headers=bearer(TOKEN))
    assert resp.status == 200
    report = await resp.json()
    assert report["rows"] == 2
    assert [r["external_id"] for r in report["added"]] == ["ext-1", "ext-2"]
    assert report["failed"] == [] and report["skipped"] == []
    user = await gate.st.users.by_link("corp", "ext-1")
    assert user.roles == ("editor",) and user.source == "csv"
    assert len(gate.events("user.provisioned")) == 2
    [event] = gate.events("admin.users.imported")
    assert event["added"] == 2 and event["actor_kind"] == "token"
    again = await (await gate.client.post(url, data=CSV, headers=bearer(TOKEN))).json()
    assert [r["line"] for r in again["skipped"]] == [2, 3]


async def test_csv_import_refuses_a_malformed_file_and_changes_nothing(gate: Gate) -> None:
    resp = await gate.client.post(
        f"{ADMIN}/api/connections/corp/users/import",
        data=b"Email\nx@example.com\n",
        headers=bearer(TOKEN),
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_csv"
    assert not await gate.st.users.all_ids()


async def test_csv_import_needs_an_admin_and_a_known_connection(gate: Gate) -> None:
    url = f"{ADMIN}/api/connections/corp/users/import"
    assert (await gate.client.post(url, data=CSV)).status == 401
    assert (await gate.client.post(url, data=CSV, headers=bearer(TOKEN[:-1]))).status == 401
    alice, _ = await two_users(gate)
    gate.client.session.cookie_jar.clear()
    plain = await gate.client.post(
        url, data=CSV, headers={**cookie_header(gate.client, alice), "Origin": ORIGIN}
    )
    assert plain.status == 403
    unknown = await gate.client.post(
        f"{ADMIN}/api/connections/nope/users/import", data=CSV, headers=bearer(TOKEN)
    )
    assert unknown.status == 404
    assert await gate.st.users.by_link("corp", "ext-1") is None
