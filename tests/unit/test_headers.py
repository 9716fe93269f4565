"""Which client headers are stripped, and which identity headers are built from a session."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from authgate.headers import IdentityHeaders, connection_tokens, normalise
from authgate.session.sessions import Session
from authgate.settings import HeaderSettings

MARK = "spoofed"


def kept(headers: IdentityHeaders, lines: CIMultiDictProxy[str], *drop: str) -> CIMultiDict[str]:
    """The client's headers as the upstream gets them, before authgate adds its own."""
    return CIMultiDict(headers.kept(lines, frozenset(normalise(n) for n in drop)))


def incoming(*lines: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(lines))


def make_session(**fields: Any) -> Session:
    base: dict[str, Any] = {
        "user_id": "u-1", "connection": "corp", "subject": "sub-1",
        "username": "alice@example.com", "email": "alice@example.com", "name": "Alice",
        "groups": ("Engineering", "Ops"), "roles": ("viewer",), "created_at": 0,
        "last_seen": 0, "expires_at": 0, "id": "sid",
    }  # fmt: skip
    base.update(fields)
    return Session(**base)


@pytest.fixture
def headers() -> IdentityHeaders:
    return IdentityHeaders.from_settings(HeaderSettings())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("X-User", "x-user"), ("X_USER", "x-user"), (" x_User ", "x-user"), ("X-_-", "x---")],
)
def test_normalise_reads_underscore_as_dash_in_any_case(raw: str, expected: str):
    assert normalise(raw) == expected


def test_connection_tokens_come_from_every_connection_line():
    tokens = connection_tokens(
        incoming(("Connection", "keep-alive, X_Secret"), ("Connection", " ,X-Other,, close"))
    )
    assert tokens == {"keep-alive", "x-secret", "x-other", "close"}


PROTECTED = [
    "X-User", "x-user", "X-USER", "x_user", "X_User", "X-Email", "X-User-Name", "x_user_name",
    "X-User-Id", "X-Groups", "X-Roles", "X-Auth-Connection", "X-Authgate-Assertion",
    "x_authgate_assertion", "X-Auth-Request-User", "X-Auth-Request-Email",
    "X-Auth-Request-Groups", "X-Auth-Request-Preferred-Username", "X-Auth-Request-Access-Token",
    "X-Auth-Request-Whatever", "x_auth_request_redirect", "X-Forwarded-User",
    "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Preferred-Username", "Remote-User",
    "remote_user", "X-Remote-User", "x_remote_user", "X-Organization", "x_organization",
]  # fmt: skip


@pytest.mark.parametrize("name", PROTECTED)
def test_every_identity_header_spelling_is_stripped(headers: IdentityHeaders, name: str):
    out = kept(headers, incoming((name, MARK), ("Accept", "text/html")))
    assert list(out.items()) == [("Accept", "text/html")]


@pytest.mark.parametrize(
    "name", ["X-Username", "X-User-Agent-Hint", "X-Auth-Requested", "Authorization", "Cookie"]
)
def test_look_alike_but_different_names_are_kept(headers: IdentityHeaders, name: str):
    assert kept(headers, incoming((name, "v")))[name] == "v"


def test_duplicates_are_all_stripped(headers: IdentityHeaders):
    out = kept(
        headers, incoming(("X-User", MARK), ("X-User", MARK), ("x_user", MARK), ("X-Keep", "1"))
    )
    assert list(out.items()) == [("X-Keep", "1")]


@pytest.mark.parametrize(
    "name",
    ["Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Authenticate", "Proxy-Connection",
     "TE", "Trailer", "Transfer-Encoding", "Upgrade", "keep_alive"],
)  # fmt: skip
def test_hop_by_hop_headers_are_stripped(headers: IdentityHeaders, name: str):
    assert name not in kept(headers, incoming((name, "x"), ("X-Keep", "1")))


def test_headers_named_in_connection_are_stripped(headers: IdentityHeaders):
    out = kept(
        headers,
        incoming(
            ("Connection", "close, X-Secret, x_other"),
            ("X-Secret", "a"),
            ("X-Other", "b"),
            ("X-Keep", "c"),
        ),
    )
    assert list(out.items()) == [("X-Keep", "c")]


def test_extra_drop_and_configured_names_are_stripped():
    settings = HeaderSettings(user="X-Remote-User", groups=None, extra_strip=["X-Tenant"])
    headers = IdentityHeaders.from_settings(settings)
    lines = [
        ("X-Remote-User", MARK),
        ("x_remote_user", MARK),
        ("X-User", MARK),
        ("X-Groups", MARK),
        ("X_TENANT", MARK),
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Keep", "1"),
    ]
    out = kept(headers, incoming(*lines), "X-Forwarded-For")
    assert list(out.items()) == [("X-Keep", "1")]


def test_order_and_repeats_of_other_headers_are_kept(headers: IdentityHeaders):
    lines = [("Accept", "a"), ("X-User", MARK), ("Cookie", "x=1"), ("Accept", "b")]
    assert list(kept(headers, incoming(*lines)).items()) == [
        ("Accept", "a"),
        ("Cookie", "x=1"),
        ("Accept", "b"),
    ]


def test_identity_headers_from_a_session(headers: IdentityHeaders):
    out = headers.identity(make_session(), "a.b.c")
    assert out == [
        ("X-User", "alice@example.com"),
        ("X-Email", "alice@example.com"),
        ("X-User-Name", "Alice"),
        ("X-User-Id", "u-1"),
        ("X-Groups", "Engineering,Ops"),
        ("X-Roles", "viewer"),
        ("X-Auth-Connection", "corp"),
        ("X-Authgate-Assertion", "a.b.c"),
    ]


def test_the_connections_organization_is_sent_only_when_set(headers: IdentityHeaders):
    out = headers.identity(make_session(organization="Contoso Ltd"), None)
    assert out[-2:] == [("X-Auth-Connection", "corp"), ("X-Organization", "Contoso Ltd")]
    assert "X-Organization" not in dict(headers.identity(make_session(), None))


def test_disabled_and_renamed_headers_and_compat():
    settings = HeaderSettings(
        user="X-Remote-User", name=None, oauth2_proxy_compat=True, assertion={"header": None}
    )
    out = dict(IdentityHeaders.from_settings(settings).identity(make_session(), "a.b.c"))
    assert out["X-Remote-User"] == "alice@example.com"
    assert "X-User-Name" not in out and "X-User" not in out
    assert "X-Authgate-Assertion" not in out
    assert out["X-Auth-Request-User"] == "alice@example.com"
    assert out["X-Auth-Request-Email"] == "alice@example.com"
    assert out["X-Auth-Request-Groups"] == "Engineering,Ops"
    assert out["X-Auth-Request-Preferred-Username"] == "alice@example.com"


def test_missing_email_and_name_are_empty(headers: IdentityHeaders):
    out = dict(headers.identity(make_session(email=None, name=None), None))
    assert out["X-Email"] == "" and out["X-User-Name"] == ""
    assert "X-Authgate-Assertion" not in out


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mallory\r\nX-Roles: admin", "Mallory  X-Roles: admin"),
        ("a\nb", "a b"),
        ("a\rb", "a b"),
        ("nul\x00byte", "nul byte"),
        ("tab\there", "tab here"),
        ("del\x7fchar", "del char"),
        ("line\u2028sep", "line sep"),
        ("next\x85line", "next line"),
        ("Zoë Ångström", "Zoë Ångström"),
    ],
)
def test_idp_values_cannot_break_out_of_their_header_line(
    headers: IdentityHeaders, value: str, expected: str
):
    session = make_session(name=value, username=value, groups=(value, "ok"), roles=(value,))
    out = dict(headers.identity(session, None))
    assert out["X-User-Name"] == expected
    assert out["X-User"] == expected
    assert out["X-Groups"] == f"{expected},ok"
    assert out["X-Roles"] == expected
    for rendered in out.values():
        assert not any(ch in rendered for ch in "\r\n\x00\u2028\x85")


def test_a_rendering_serves_only_the_very_session_and_assertion_it_was_made_from(
    headers: IdentityHeaders,
):
    """Kept per session id, but never for a renewed session or a re-signed assertion."""
    first = make_session()
    kept = headers.rendered(first, "a.b.c")
    assert headers.rendered(first, "a.b.c") is kept
    assert kept.pairs == tuple(headers.identity(first, "a.b.c"))
    assert kept.lines == b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in kept.pairs)
    renewed = make_session(groups=("Finance",))
    assert dict(headers.rendered(renewed, "a.b.c").pairs)["X-Groups"] == "Finance"
    resigned = headers.rendered(renewed, "d.e.f")
    assert dict(resigned.pairs)["X-Authgate-Assertion"] == "d.e.f"
    names = {name.lower() for name, _ in resigned.pairs}
    assert not names & {"x-request-id", "x-forwarded-for", "x-real-ip", "cookie"}
