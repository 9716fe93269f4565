"""Sessions, pre-login state and the replay cache on top of every KeyValueStore.

Each test runs per topology (memory, Redis standalone, Sentinel, Cluster)
through `store_backend`. Lifetimes are driven by a controllable clock where
the code accepts one; the few real expiries share one short wait per store.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from dataclasses import replace
from http.cookies import SimpleCookie
from typing import Any, cast

import pytest
from aiohttp import web

from authgate.errors import LoginStateError
from authgate.session.cookies import CookiePolicy
from authgate.session.kv import KeyValueStore
from authgate.session.login_state import LoginStateStore, new_browser_id
from authgate.session.memory import MemoryStore
from authgate.session.replay import ReplayCache
from authgate.session.sessions import Session, SessionStore
from tests.conftest import StoreBackend, make_settings

T0 = 1_800_000_000.0


class Clock:
    """Wall-clock stand-in that only moves when the test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def template(user_id: str = "u-alice", **fields: Any) -> Session:
    values: dict[str, Any] = {
        "user_id": user_id,
        "connection": "corp",
        "subject": "sub-" + user_id,
        "username": f"{user_id}@example.com",
        "email": f"{user_id}@example.com",
        "name": "Alice",
        "groups": ("Engineering",),
        "roles": ("viewer",),
        "created_at": 0,
        "last_seen": 0,
        "expires_at": 0,
    }
    values.update(fields)
    return Session(**values)


def sessions(
    backend: StoreBackend, clock: Clock, lifetime: float = 100.0, idle: float = 10.0
) -> SessionStore:
    """A SessionStore on a fresh client: each call is another replica."""
    return SessionStore(backend.client(), lifetime=lifetime, idle_timeout=idle, clock=clock)


def digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


# --- session ids and cookies (store-independent) ---------------------------------------------


async def test_session_id_is_256_bits_from_the_os_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[bytes] = []
    real = secrets.token_bytes

    def spy(nbytes: int | None = None) -> bytes:
        value = real(nbytes)
        drawn.append(value)
        return value

    monkeypatch.setattr(secrets, "token_bytes", spy)
    session = await SessionStore(MemoryStore(), 100, 10).create(template())
    assert [len(d) for d in drawn] == [32]
    assert base64.urlsafe_b64decode(session.id + "=") == drawn[0]
    assert len(session.id) == 43


async def test_session_ids_never_repeat() -> None:
    store = SessionStore(MemoryStore(), 100, 10)
    ids = {(await store.create(template())).id for _ in range(500)}
    assert len(ids) == 500
    assert all(len(base64.urlsafe_b64decode(i + "=")) == 32 for i in ids)


def test_cookie_carries_only_the_session_id() -> None:
    policy = CookiePolicy.from_settings(make_settings("http://127.0.0.1:1"))
    sid = secrets.token_urlsafe(32)
    response = web.Response()
    policy.set_session(response, sid, 3600)
    assert list(response.cookies) == ["__Host-authgate"]
    morsel = SimpleCookie(response.cookies.output(header=""))["__Host-authgate"]
    assert morsel.value == sid
    assert morsel["httponly"] is True
    assert morsel["secure"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert morsel["max-age"] == "3600"
    assert not morsel["domain"], "__Host- cookies must not name a domain"


# --- sessions on every store -------------------------------------------------------------------


async def test_store_keeps_a_hash_and_never_the_id(store_backend: StoreBackend) -> None:
    """A dump of the store (backup, `redis-cli`) must not hand out live cookies."""
    store = sessions(store_backend, Clock())
    session = await store.create(template())
    dump = await store_backend.raw_dump()
    assert session.id not in dump
    assert f"sess:{digest(session.id)}" in dump
    kv = store_backend.client()
    assert await kv.get("sess:" + session.id) is None
    assert await kv.get("sess:" + digest(session.id)) is not None


async def test_create_mints_a_fresh_id_even_from_the_same_template(
    store_backend: StoreBackend,
) -> None:
    store = sessions(store_backend, Clock())
    planted = template(id="attacker-chosen-session-id")
    first, second = await store.create(planted), await store.create(planted)
    assert len({first.id, second.id, planted.id}) == 3
    assert await store.load(planted.id) is None
    assert (await store.load(first.id)) == first
    assert (await store.load(second.id)) == second
    assert await store.count_for_user("u-alice") == 2


async def test_absolute_lifetime_ends_even_an_active_session(store_backend: StoreBackend) -> None:
    clock = Clock()
    store = sessions(store_backend, clock, lifetime=100, idle=10)
    session = await store.create(template())
    assert session.created_at == T0 and session.expires_at == T0 + 100
    for step in range(9, 100, 9):
        clock.now = T0 + step
        assert await store.load(session.id) is not None, f"active at +{step}s"
    clock.now = T0 + 100
    assert await store.load(session.id) is None
    assert await store_backend.client().get("sess:" + digest(session.id)) is None
    assert await store.count_for_user("u-alice") == 0


async def test_template_expiry_caps_the_lifetime(store_backend: StoreBackend) -> None:
    """SAML SessionNotOnOrAfter (or any IdP-side end) is honoured when it is sooner."""
    clock = Clock()
    store = sessions(store_backend, clock, lifetime=100, idle=50)
    capped = await store.create(template(expires_at=T0 + 30))
    uncapped = await store.create(template(expires_at=T0 + 500))
    assert capped.expires_at == T0 + 30
    assert uncapped.expires_at == T0 + 100, "an IdP may shorten a session, never lengthen it"
    clock.now = T0 + 29.9
    assert await store.load(capped.id) is not None
    clock.now = T0 + 30
    assert await store.load(capped.id) is None
    assert await store.load(uncapped.id) is not None


async def test_idle_timeout_ends_an_untouched_session(store_backend: StoreBackend) -> None:
    clock = Clock()
    store = sessions(store_backend, clock, lifetime=100, idle=10)
    session = await store.create(template())
    clock.now = T0 + 9.99
    other = await store.create(template())
    clock.now = T0 + 10
    assert await store.load(session.id) is None
    assert await store_backend.client().get("sess:" + digest(session.id)) is None
    assert await store.load(other.id) is not None


async def test_touch_extends_the_idle_deadline_on_every_replica(
    store_backend: StoreBackend,
) -> None:
    clock = Clock()
    replica_a, replica_b = sessions(store_backend, clock), sessions(store_backend, clock)
    session = await replica_a.create(template())
    clock.now = T0 + 0.5
    untouched = await replica_a.load(session.id)
    assert untouched is not None and untouched.last_seen == T0, "touches are rate-limited"
    clock.now = T0 + 9
    touched = await replica_a.load(session.id)
    assert touched is not None and touched.last_seen == T0 + 9
    clock.now = T0 + 18
    seen_by_b = await replica_b.load(session.id)
    assert seen_by_b is not None, "replica B sees the touch made by replica A"
    assert seen_by_b.last_seen == T0 + 18
    clock.now = T0 + 28
    assert await replica_a.load(session.id) is None


class _RevokeBetweenReadAndTouch:
    """Runs a concurrent request's revocation after the session is read, before it is touched."""

    def __init__(self, kv: KeyValueStore, revoke: Any) -> None:
        self._kv = kv
        self._revoke = revoke

    async def get(self, key: str) -> bytes | None:
        value = await self._kv.get(key)
        await self._revoke()
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kv, name)


async def test_a_touch_never_resurrects_a_revoked_session(store_backend: StoreBackend) -> None:
    clock = Clock()
    admin = sessions(store_backend, clock)
    session = await admin.create(template())
    racing_kv = _RevokeBetweenReadAndTouch(
        store_backend.client(), lambda: admin.revoke_user("u-alice")
    )
    racing = SessionStore(cast(KeyValueStore, racing_kv), 100, 10, clock=clock)
    clock.now = T0 + 5
    assert await racing.load(session.id) is None
    assert await store_backend.client().get("sess:" + digest(session.id)) is None
    assert await admin.load(session.id) is None


async def test_update_renews_contents_but_never_resurrects(store_backend: StoreBackend) -> None:
    clock = Clock()
    replica_a, replica_b = sessions(store_backend, clock), sessions(store_backend, clock)
    session = await replica_a.create(template())
    renewed = await replica_a.update(replace(session, roles=("editor",)))
    assert renewed is not None
    loaded = await replica_b.load(session.id)
    assert loaded is not None and loaded.roles == ("editor",)
    assert loaded.expires_at == session.expires_at, "a renewal never extends the lifetime"
    await replica_b.revoke_user("u-alice")
    assert await replica_a.update(replace(session, roles=("admin",))) is None
    assert await store_backend.client().get("sess:" + digest(session.id)) is None
    clock.now = session.expires_at
    assert await replica_a.update(session) is None


async def test_revoke_user_ends_every_session_of_that_user_only(
    store_backend: StoreBackend,
) -> None:
    clock = Clock()
    replica_a, replica_b = sessions(store_backend, clock), sessions(store_backend, clock)
    alice = [await replica_a.create(template("u-alice")) for _ in range(3)]
    bob = await replica_a.create(template("u-bob"))
    assert await replica_b.count_for_user("u-alice") == 3
    assert await replica_a.revoke_user("u-alice") == 3
    for session in alice:
        assert await replica_b.load(session.id) is None
    assert await replica_b.count_for_user("u-alice") == 0
    assert await replica_b.load(bob.id) is not None
    assert await replica_b.count_for_user("u-bob") == 1
    assert await replica_a.revoke_user("u-alice") == 0
    assert await replica_a.revoke_user("u-nobody") == 0


async def test_revoke_counts_only_live_sessions_and_logout_unindexes(
    store_backend: StoreBackend,
) -> None:
    clock = Clock()
    store = sessions(store_backend, clock)
    kept, logged_out, vanished = [await store.create(template()) for _ in range(3)]
    await store.delete(logged_out)
    await store_backend.client().delete("sess:" + digest(vanished.id))
    assert await store.count_for_user("u-alice") == 1
    assert await store_backend.client().members("user-sessions:u-alice") == {digest(kept.id)}
    assert await store.revoke_user("u-alice") == 1
    assert await store_backend.client().members("user-sessions:u-alice") == set()


async def test_revoke_idp_sessions_ends_only_the_named_sign_ins(
    store_backend: StoreBackend,
) -> None:
    """SessionIndex scope: the named sign-in's sessions end on every replica; the same
    subject's other sign-ins, other connections and other subjects keep theirs."""
    clock = Clock()
    replica_a, replica_b = sessions(store_backend, clock), sessions(store_backend, clock)
    named = [await replica_a.create(template(idp_session="idx-1")) for _ in range(2)]
    other_sign_in = await replica_a.create(template(idp_session="idx-2"))
    other_connection = await replica_a.create(template(connection="corp2", idp_session="idx-1"))
    unindexed = await replica_a.create(template())
    other_subject = await replica_a.create(template("u-bob", idp_session="idx-1"))
    ended = await replica_b.revoke_idp_sessions("corp", "sub-u-alice", ["idx-1", "idx-1"])
    assert [(s.user_id, s.idp_session) for s in ended] == [("u-alice", "idx-1")] * 2
    for session in named:
        assert await replica_b.load(session.id) is None
    for session in (other_sign_in, other_connection, unindexed, other_subject):
        assert await replica_b.load(session.id) is not None
    assert await replica_b.count_for_user("u-alice") == 3
    assert await store_backend.client().members("user-sessions:u-alice") == {
        digest(s.id) for s in (other_sign_in, other_connection, unindexed)
    }
    assert await replica_a.revoke_idp_sessions("corp", "sub-u-alice", ["idx-1"]) == []
    assert await replica_a.revoke_idp_sessions("corp", "sub-u-alice", ["idx-unknown"]) == []
    assert await replica_a.revoke_idp_sessions("corp", "sub-u-alice", []) == []


async def test_a_session_index_counts_only_with_its_subject(store_backend: StoreBackend) -> None:
    store = sessions(store_backend, Clock())
    bob = await store.create(template("u-bob", idp_session="idx-bob"))
    assert await store.revoke_idp_sessions("corp", "sub-u-alice", ["idx-bob"]) == []
    assert await store.load(bob.id) is not None


async def test_revoke_subject_ends_the_subjects_sessions_at_that_connection_only(
    store_backend: StoreBackend,
) -> None:
    clock = Clock()
    store = sessions(store_backend, clock)
    here = [
        await store.create(template(idp_session="idx-1")),
        await store.create(template(idp_session="idx-2")),
        await store.create(template()),
    ]
    elsewhere = await store.create(template(connection="corp2"))
    other_subject = await store.create(template(subject="sub-other"))
    assert len(await store.revoke_subject("corp", "sub-u-alice")) == 3
    for session in here:
        assert await store.load(session.id) is None
    assert await store.load(elsewhere.id) is not None
    assert await store.load(other_subject.id) is not None
    assert await store.revoke_idp_sessions("corp", "sub-u-alice", ["idx-1", "idx-2"]) == []
    assert await store.revoke_subject("corp", "sub-u-alice") == []


async def test_idp_indexes_are_hashes_and_follow_the_session(store_backend: StoreBackend) -> None:
    """The index keys hash connection, NameID and SessionIndex (the IdP's values never
    appear in a key); a logout takes the entries away."""
    clock = Clock()
    store = sessions(store_backend, clock)
    session = await store.create(template(idp_session="_idp-index-1"))
    loaded = await store.load(session.id)
    assert loaded is not None and loaded.idp_session == "_idp-index-1"
    by_sign_in = "idp-sessions:" + hashlib.sha256(b"corp\0sub-u-alice\0_idp-index-1").hexdigest()
    by_subject = "subject-sessions:" + hashlib.sha256(b"corp\0sub-u-alice").hexdigest()
    kv = store_backend.client()
    assert await kv.members(by_sign_in) == {digest(session.id)}
    assert await kv.members(by_subject) == {digest(session.id)}
    await store.delete(session)
    assert await kv.members(by_sign_in) == set()
    assert await kv.members(by_subject) == set()


@pytest.mark.parametrize("sid", ["", "x" * 129, "not-a-session", "../../etc/passwd", "\x00"])
async def test_load_refuses_unknown_or_malformed_ids(store_backend: StoreBackend, sid: str) -> None:
    store = sessions(store_backend, Clock())
    await store.create(template())
    assert await store.load(sid) is None


# --- pre-login state ---------------------------------------------------------------------------


async def test_several_tabs_log_in_at_once_behind_one_browser_id(
    store_backend: StoreBackend,
) -> None:
    states = LoginStateStore(store_backend.client(), ttl=60)
    browser = new_browser_id()
    keys = [await states.put(browser, {"tab": n, "rd": f"/page/{n}"}) for n in range(3)]
    saml_key = await states.put(browser, {"tab": "saml"}, key="_id-issued-by-us")
    assert saml_key == "_id-issued-by-us"
    other_replica = LoginStateStore(store_backend.client(), ttl=60)
    for n in (2, 0, 1):
        assert await other_replica.take(keys[n], browser) == {"tab": n, "rd": f"/page/{n}"}
    assert await other_replica.take(saml_key, browser) == {"tab": "saml"}


async def _refusal(states: LoginStateStore, key: str, browser: str | None) -> LoginStateError:
    with pytest.raises(LoginStateError) as caught:
        await states.take(key, browser)
    assert caught.value.status == 400
    return caught.value


async def test_login_state_is_single_use(store_backend: StoreBackend) -> None:
    states = LoginStateStore(store_backend.client(), ttl=60)
    browser = new_browser_id()
    key = await states.put(browser, {"nonce": "n"})
    assert await states.take(key, browser) == {"nonce": "n"}
    assert (await _refusal(states, key, browser)).reason == "state_expired"


async def test_login_state_from_another_browser_is_a_mismatch(
    store_backend: StoreBackend,
) -> None:
    states = LoginStateStore(store_backend.client(), ttl=60)
    victim, attacker = new_browser_id(), new_browser_id()
    key = await states.put(victim, {"nonce": "n"})
    assert (await _refusal(states, key, attacker)).reason == "state_mismatch"
    assert (await _refusal(states, key, victim)).reason == "state_expired", (
        "a mismatched attempt burns the state, so it cannot be probed again"
    )
    second = await states.put(victim, {"nonce": "m"})
    assert (await _refusal(states, second, None)).reason == "state_mismatch"
    third = await states.put(victim, {"nonce": "o"})
    assert (await _refusal(states, third, "")).reason == "state_mismatch"


@pytest.mark.parametrize("key", ["", "never-issued", "k" * 257])
async def test_unknown_login_state_is_expired(store_backend: StoreBackend, key: str) -> None:
    states = LoginStateStore(store_backend.client(), ttl=60)
    assert (await _refusal(states, key, new_browser_id())).reason == "state_expired"


async def test_login_state_is_consumed_once_across_replicas(store_backend: StoreBackend) -> None:
    replicas = [LoginStateStore(store_backend.client(), ttl=60) for _ in range(2)]
    browser = new_browser_id()
    key = await replicas[0].put(browser, {"v": 1})
    results = await asyncio.gather(
        *(replicas[i % 2].take(key, browser) for i in range(10)), return_exceptions=True
    )
    assert results.count({"v": 1}) == 1
    refused = [r for r in results if isinstance(r, LoginStateError)]
    assert len(refused) == 9 and {r.reason for r in refused} == {"state_expired"}


# --- replay cache ------------------------------------------------------------------------------


async def test_replay_is_refused_on_every_replica(store_backend: StoreBackend) -> None:
    replica_a, replica_b = ReplayCache(store_backend.client()), ReplayCache(store_backend.client())
    assert await replica_a.first_use("saml", "_assertion-1", ttl=300) is True
    assert await replica_b.first_use("saml", "_assertion-1", ttl=300) is False
    assert await replica_a.first_use("saml", "_assertion-1", ttl=300) is False
    assert await replica_b.first_use("oidc", "_assertion-1", ttl=300) is True, "per namespace"
    assert await replica_b.first_use("saml", "_assertion-2", ttl=300) is True
    assert "_assertion-1" not in await store_backend.raw_dump()


async def test_replay_race_has_one_winner(store_backend: StoreBackend) -> None:
    replicas = [ReplayCache(store_backend.client()) for _ in range(2)]
    results = await asyncio.gather(
        *(replicas[i % 2].first_use("saml", "_raced", ttl=300) for i in range(20))
    )
    assert results.count(True) == 1


# --- real expiry in the store itself -----------------------------------------------------------

# ReplayCache keeps entries at least one second, so the single wait must pass that.
PAST_REPLAY_FLOOR = 1.15


async def test_expired_state_leaves_the_store(store_backend: StoreBackend) -> None:
    """One real wait per store: the backend itself drops expired sessions, states and replays.

    A logical check alone would leave old sessions in Redis forever; here the
    keys must be gone from the backend, not merely refused.
    """
    kv = store_backend.client()
    idle_store = SessionStore(kv, lifetime=60, idle_timeout=0.3)
    short_store = SessionStore(kv, lifetime=0.3, idle_timeout=0.3)
    idle = await idle_store.create(template("u-idle"))
    short = await short_store.create(template())
    capped = await idle_store.create(template("u-capped", expires_at=time.time() + 0.3))
    states = LoginStateStore(kv, ttl=0.3)
    browser = new_browser_id()
    state_key = await states.put(browser, {"v": 1})
    replay = ReplayCache(kv)
    assert await replay.first_use("saml", "_late", ttl=0.1) is True
    assert await replay.first_use("saml", "_late", ttl=0.1) is False

    await asyncio.sleep(PAST_REPLAY_FLOOR)

    dump = await store_backend.raw_dump()
    for session in (idle, short, capped):
        assert f"sess:{digest(session.id)}" not in dump
    assert "user-sessions:u-alice" not in dump, "the per-user index expires with the lifetime"
    assert "user-sessions:u-idle" in dump, "but lives as long as a session of it could"
    assert (await _refusal(states, state_key, browser)).reason == "state_expired"
    assert await replay.first_use("saml", "_late", ttl=0.1) is True, "replay entries expire"


def test_a_session_written_before_refresh_at_was_a_field_keeps_its_renewal_time() -> None:
    """An older authgate kept the OIDC renewal time in protocol_data; a session it wrote is
    still renewed on time (not served unrenewed until it expires) after the upgrade."""
    old = {
        "user_id": "u1", "connection": "corp", "subject": "s", "username": "alice",
        "email": None, "name": None, "groups": [], "roles": [], "created_at": 1.0,
        "last_seen": 1.0, "expires_at": 9e9,
        "protocol_data": {"id_token": "t", "refresh_token": "r", "refresh_at": 100.0},
    }  # fmt: skip
    session = Session.from_json("sid", json.dumps(old).encode())
    assert session.refresh_at == 100.0 and "refresh_at" not in session.protocol_data
    assert session.refresh_due(101.0) and not session.refresh_due(99.0)
    again = Session.from_json("sid", session.to_json())
    assert again == session
