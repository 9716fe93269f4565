"""`decision.decide`: the one answer both fronts serialise, checked as data."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from authgate.app import build_state
from authgate.errors import BadRequest
from authgate.session.memory import MemoryStore
from authgate.session.sessions import Session
from authgate.web.client_info import ClientInfo
from authgate.web.decision import REPLACED, Action, Decision, Endpoint, decide, facts
from authgate.web.state import State
from tests.conftest import make_settings

TRUSTED = ClientInfo("203.0.113.9", "https", "app.example.com", True, "203.0.113.9, 127.0.0.1")
DIRECT = ClientInfo("198.51.100.7", "http", "app.example.com", False, "198.51.100.7")
AUTH = "/_authgate/auth"


@pytest.fixture
def st() -> State:
    return build_state(
        make_settings("http://127.0.0.1:9", access={"public_paths": ["/pub/"]}), MemoryStore()
    )


def session(**fields: Any) -> Session:
    base: dict[str, Any] = {
        "user_id": "u-1", "connection": "corp", "subject": "s", "username": "alice",
        "email": "a@example.com", "name": "Alice", "groups": ("Engineering",),
        "roles": ("viewer",), "created_at": 0, "last_seen": 0, "expires_at": 0, "id": "sid",
    }  # fmt: skip
    return Session(**{**base, **fields})


def ask(
    st: State,
    endpoint: Endpoint,
    target: str,
    client: ClientInfo = TRUSTED,
    method: str = "GET",
    **headers: str,
) -> Any:
    lines = CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}))
    return facts(st, endpoint, method, target, lines, client, "cid-1")


def test_the_auth_yes_carries_the_identity_and_no_store(st: State):
    who = session()
    decision = decide(st, ask(st, Endpoint.AUTH, AUTH, X_Original_URI="/app"), who)
    assert (decision.action, decision.status, decision.reason) == (Action.ANSWER, 200, "allowed")
    assert decision.headers == (("Cache-Control", "no-store"),)
    assert decision.identity is not None
    assert ("X-User", "alice") in decision.identity.pairs


@pytest.mark.parametrize(
    "query", ["?allowed_groups=admins", "?allowed_roles=admin", "?allowed_groups=engineering"]
)
def test_the_auth_refusal_outside_the_location_is_forbidden(st: State, query: str):
    decision = decide(st, ask(st, Endpoint.AUTH, AUTH + query), session())
    assert (decision.action, decision.status, decision.reason) == (Action.ANSWER, 403, "forbidden")
    assert decision.identity is None


def test_the_auth_without_session_is_401_naming_the_sign_in(st: State):
    request = ask(st, Endpoint.AUTH, AUTH, X_Original_URI="/r?x=1", Accept="text/html")
    decision = decide(st, request, None)
    assert (decision.status, decision.reason) == (401, "unauthenticated")
    assert decision.login_url == "/_authgate/login?rd=%2Fr%3Fx%3D1"
    headers = dict(decision.headers)
    assert headers["X-Authgate-Login"] == headers["X-Authgate-Redirect"] == decision.login_url
    assert headers["X-Authgate-Reason"] == "unauthenticated"
    assert headers["WWW-Authenticate"] == 'Cookie realm="authgate"'


def test_only_a_trusted_proxy_names_the_original_request(st: State):
    """From anyone else `X-Original-URI` neither makes a path public nor picks the method."""
    spoofed = {"X_Original_URI": "/pub/x", "X_Original_Method": "POST", "Accept": "text/html"}
    direct = ask(st, Endpoint.AUTH, AUTH, DIRECT, **spoofed)
    assert not direct.public
    decision = decide(st, direct, None)
    assert (decision.status, decision.reason) == (401, "unauthenticated")
    assert decision.login_url == "/_authgate/login?rd=%2F"
    assert "X-Authgate-Redirect" in dict(decision.headers)
    trusted = decide(st, ask(st, Endpoint.AUTH, AUTH, **spoofed), None)
    assert trusted == decide(st, ask(st, Endpoint.AUTH, AUTH, **spoofed), session())
    assert (trusted.status, trusted.reason, trusted.identity) == (200, "public", None)


def test_a_proxied_request_is_forwarded_with_trusted_client_info(st: State):
    decision = decide(st, ask(st, Endpoint.PROXY, "/app?q=1"), session())
    assert (decision.action, decision.reason) == (Action.FORWARD, "forwarded")
    assert dict(decision.headers) == {
        "X-Forwarded-For": "203.0.113.9, 127.0.0.1",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.com",
        "X-Real-IP": "203.0.113.9",
        "X-Request-Id": "cid-1",
    }
    assert decision.strip == REPLACED
    assert decision.identity is not None


def test_a_public_path_is_forwarded_without_identity_or_session(st: State):
    request = ask(st, Endpoint.PROXY, "/pub/logo.png")
    assert request.public
    decision = decide(st, request, session())
    assert (decision.action, decision.identity, decision.strip) == (Action.FORWARD, None, REPLACED)


@pytest.mark.parametrize(
    ("method", "accept", "status"),
    [("GET", "text/html", 302), ("HEAD", "text/html", 302), ("POST", "text/html", 401),
     ("GET", "application/json", 401)],
)  # fmt: skip
def test_no_session_redirects_navigations_and_refuses_the_rest(
    st: State, method: str, accept: str, status: int
):
    decision = decide(st, ask(st, Endpoint.PROXY, "/app", method=method, Accept=accept), None)
    assert (decision.status, decision.reason) == (status, "unauthenticated")
    if status == 302:
        assert decision.action is Action.REDIRECT
        assert dict(decision.headers)["Location"] == "/_authgate/login?rd=%2Fapp"


@pytest.mark.parametrize("target", ["/pub/x#frag", "http://evil.example/pub/x"])
def test_a_target_that_reads_two_ways_is_refused_before_any_decision(st: State, target: str):
    with pytest.raises(BadRequest) as refused:
        ask(st, Endpoint.PROXY, target)
    assert (refused.value.status, refused.value.reason) == (400, "invalid_request")


def test_a_decision_is_data(st: State):
    decision = decide(st, ask(st, Endpoint.AUTH, AUTH), session())
    assert isinstance(decision, Decision)
    with pytest.raises(AttributeError):
        decision.status = 500  # type: ignore[misc]
