"""Public paths: a parser differential here would let an anonymous request reach the app.

Every path that two servers could resolve differently must be refused by
`normalise_path` (None), so that it is never public and always needs a session.
"""

from __future__ import annotations

import pytest

from authgate.urls import PublicPaths, normalise_path

PATHS = PublicPaths.build(["/public/", "/health", "/static*"])

BYPASSES = [
    # dot segments, literal and encoded in every case
    "/public/../admin",
    "/public/./../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/.%2e/admin",
    "/public/%2e/../admin",
    "/admin/../public/x",
    "/admin/%2e%2e/public/x",
    "/public/x/..",
    "/public/.",
    # path parameters: Tomcat reads `..;` as `..`, others as a name
    "/public;x/../admin",
    "/public/..;/admin",
    "/admin/..;/public/x",
    "/public;/x",
    "/public/x%3b/../../admin",
    # encoded separators and double encoding
    "/public%2f..%2fadmin",
    "/public%2F..%2Fadmin",
    "/public%2fx",
    "/public/%5c..%5cadmin",
    "/public/%252e%252e/admin",
    "/public/%252fadmin",
    "/public/%25",
    # backslashes (IIS reads them as slashes)
    "/public\\..\\admin",
    "/public/..\\admin",
    "/public\\x",
    # empty segments; `//x/y` is host x to some parsers
    "//admin",
    "//public/x",
    "/public//x",
    "///public/x",
    # NUL and other controls
    "/public/x%00",
    "/public/x%00/../../admin",
    "/public/x\x00",
    "/public/x%0a",
    "/public/x%09",
    "/public/x y",
    "/public/x%7f",
    # not a path, or not UTF-8
    "public/x",
    "http://app.example.com/public/x",
    "",
    "/public/%ff",
    "/public/x#frag",
    # full-width look-alikes that NFKC-folding servers turn into separators
    "/public/\uff0e\uff0e/admin",
    "/public/%EF%BC%8E%EF%BC%8E/admin",
    "/public\uff0f..\uff0fadmin",
    "/public/x\uff3c..\uff3cadmin",
]


@pytest.mark.parametrize("raw", BYPASSES)
def test_ambiguous_paths_are_refused(raw: str):
    assert normalise_path(raw) is None
    assert not PATHS.match(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/public/x", "/public/x"),
        ("/public/x/", "/public/x/"),
        ("/public/a%20b", "/public/a b"),
        ("/public/caf%C3%A9", "/public/café"),
        ("/public/x?next=/../admin&y=%2f", "/public/x"),
        ("/public/file.tar.gz", "/public/file.tar.gz"),
        ("/public/...", "/public/..."),
        ("/public/.well-known/x", "/public/.well-known/x"),
        ("/public/%7Euser", "/public/~user"),
    ],
)
def test_plain_paths_decode(raw: str, expected: str):
    assert normalise_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "public"),
    [
        # prefix entry `/public/`
        ("/public/", True),
        ("/public/x", True),
        ("/public/a/b/c.js", True),
        ("/public/x?q=1", True),
        ("/public/%78", True),
        ("/public", False),
        ("/publicity", False),
        ("/Public/x", False),
        # exact entry `/health`
        ("/health", True),
        ("/health?probe=1", True),
        ("/health/", False),
        ("/health/x", False),
        ("/healthz", False),
        ("/%68ealth", True),
        # raw prefix entry `/static*`
        ("/static", True),
        ("/static.css", True),
        ("/static/x", True),
        ("/staticfoo", True),
        ("/stati", False),
        # everything else
        ("/", False),
        ("/admin", False),
    ],
)
def test_entry_semantics(raw: str, public: bool):
    assert PATHS.match(raw) is public


def test_no_public_paths_matches_nothing():
    empty = PublicPaths.build([])
    assert not empty
    assert not empty.match("/")
    assert not empty.match("/public/x")
