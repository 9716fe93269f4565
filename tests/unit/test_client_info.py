"""Who the client is: forwarding headers count only from trusted proxies, remembered per chain."""

from __future__ import annotations

from multidict import CIMultiDict

from authgate.web.client_info import ClientInfo, TrustedProxies


def _headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def test_untrusted_peer_forwarding_headers_ignored() -> None:
    trusted = TrustedProxies(["10.0.0.0/8"])
    info = trusted.describe(
        "192.0.2.7", "http", "app", _headers(("X-Forwarded-For", "198.51.100.1"))
    )
    assert info == ClientInfo("192.0.2.7", "http", "app", False, "192.0.2.7")


def test_trusted_chain_stops_at_first_untrusted_hop() -> None:
    trusted = TrustedProxies(["10.0.0.0/8"])
    headers = _headers(
        ("X-Forwarded-For", "203.0.113.9, 198.51.100.1"),
        ("X-Forwarded-For", "10.1.1.1"),
        ("X-Forwarded-Proto", "https, http"),
        ("X-Forwarded-Host", "app.example.com"),
    )
    info = trusted.describe("10.2.2.2", "http", "internal", headers)
    assert info == ClientInfo(
        "198.51.100.1",
        "https",
        "app.example.com",
        True,
        "203.0.113.9, 198.51.100.1, 10.1.1.1, 10.2.2.2",
    )


def test_remembered_answer_only_for_the_same_headers() -> None:
    """A front proxy repeats itself, but a different chain must never get a remembered client."""
    trusted = TrustedProxies(["127.0.0.0/8"])
    first = trusted.describe(
        "127.0.0.1", "http", "a", _headers(("X-Forwarded-For", "198.51.100.1"))
    )
    again = trusted.describe(
        "127.0.0.1", "http", "a", _headers(("X-Forwarded-For", "198.51.100.1"))
    )
    assert again is first
    cases = [
        ("127.0.0.2", "http", "a", _headers(("X-Forwarded-For", "198.51.100.1"))),
        ("127.0.0.1", "https", "a", _headers(("X-Forwarded-For", "198.51.100.1"))),
        ("127.0.0.1", "http", "b", _headers(("X-Forwarded-For", "198.51.100.1"))),
        ("127.0.0.1", "http", "a", _headers(("X-Forwarded-For", "198.51.100.2"))),
        (
            "127.0.0.1",
            "http",
            "a",
            _headers(("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.5")),
        ),
        (
            "127.0.0.1",
            "http",
            "a",
            _headers(("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-Proto", "https")),
        ),
        (
            "127.0.0.1",
            "http",
            "a",
            _headers(("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-Host", "evil")),
        ),
        ("127.0.0.1", "http", "a", _headers()),
    ]
    for peer, scheme, host, headers in cases:
        remembered = trusted.describe(peer, scheme, host, headers)
        fresh = TrustedProxies(["127.0.0.0/8"]).describe(peer, scheme, host, headers)
        assert remembered == fresh
        assert remembered != first
