"""Return-path validation (no open redirect) and public-path matching.

Both are places where a parser differential is an exploit: the browser, nginx
and the upstream framework must never read a URL differently from the way
authgate checked it. So both refuse anything ambiguous instead of guessing.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

MAX_REDIRECT_LENGTH = 4096
_DECODE_ROUNDS = 4
_RAW_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")
_DECODED_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
_PATH_RAW_FORBIDDEN = re.compile(r"%(2f|5c|25|00)|[#\x00-\x20\x7f\\]", re.IGNORECASE)
_PATH_DECODED_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\;]")


def _decodings(value: str) -> list[str] | None:
    """Every form a chain of decoders could see; None if it never settles."""
    forms = [value]
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            return forms
        forms.append(decoded)
    return None


@dataclass(frozen=True, slots=True)
class RedirectPolicy:
    """Where a browser may be sent after sign-in: local paths, the public host, listed hosts.

    `allowed_hosts` entries are exact host names, except that an entry with a
    leading dot (`.example.com`) allows every subdomain at any depth
    (`a.example.com`, `a.b.example.com`) but not `example.com` itself, which
    must be listed on its own. Ports and schemes other than http(s) never matter
    for the host check; userinfo (`user@host`) is always refused.
    """

    public_host: str
    allowed_hosts: frozenset[str]

    @classmethod
    def build(cls, public_url: str, allowed_hosts: list[str]) -> RedirectPolicy:
        host = (urlsplit(public_url).hostname or "").lower()
        return cls(public_host=host, allowed_hosts=frozenset(h.lower() for h in allowed_hosts))

    def _host_allowed(self, host: str) -> bool:
        if host == self.public_host or host in self.allowed_hosts:
            return True
        return any(
            allowed.startswith(".") and host.endswith(allowed) for allowed in self.allowed_hosts
        )

    def safe(self, target: str | None, fallback: str = "/") -> str:
        """`target` if it is a safe place to send the browser after sign-in, else `fallback`.

        Browsers drop tabs and newlines and read `\\` as `/`, so `/\\evil` or
        `/<TAB>/evil` becomes `//evil`, another site. Every decoding of the
        target is checked, because a later hop (the IdP's RelayState, an
        upstream redirect) may decode it again.
        """
        if not target or len(target) > MAX_REDIRECT_LENGTH or not target.isascii():
            return fallback
        forms = _decodings(target)
        if forms is None or _RAW_FORBIDDEN.search(target):
            return fallback
        if any(_DECODED_FORBIDDEN.search(form) for form in forms):
            return fallback
        if target.startswith("/"):
            return fallback if any(form.startswith("//") for form in forms) else target
        return target if self._absolute_allowed(target) else fallback

    def _absolute_allowed(self, target: str) -> bool:
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        if "@" in parts.netloc or parts.hostname is None:
            return False
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            return False
        return self._host_allowed(parts.hostname)


def _unambiguous(path: str) -> bool:
    """No dot segments, no empty segments except a trailing slash, nothing servers disagree on."""
    if _PATH_DECODED_FORBIDDEN.search(path):
        return False
    segments = path[1:].split("/")
    if any(seg in (".", "..") for seg in segments):
        return False
    return all(segments[:-1])


def normalise_path(raw_path: str) -> str | None:
    """The decoded path, or None when servers could resolve it to different resources.

    Servers disagree about `..` and `.` (some route on the raw path, nginx
    resolves them), `;` parameters (Tomcat drops them, so `..;` is `..` to it
    and a name to others), encoded `/` and `\\`, double encoding, `//` (some
    read `//x/y` as host `x`), NUL bytes and full-width look-alikes (servers
    that NFKC-fold read U+FF0E U+FF0E as `..`). Browsers never send such paths,
    so a path using any of them is simply not public: it needs a session.
    """
    path = raw_path.split("?", 1)[0]
    if not path.startswith("/") or _PATH_RAW_FORBIDDEN.search(path):
        return None
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    if not _unambiguous(decoded):
        return None
    folded = unicodedata.normalize("NFKC", decoded)
    if folded != decoded and not _unambiguous(folded):
        return None
    return decoded


@dataclass(frozen=True, slots=True)
class PublicPaths:
    """Paths that pass without a session, matched against the decoded request path.

    An entry ending in `/` is a prefix (`/static/` matches `/static/` and
    everything below, not `/static`); an entry ending in `*` is a raw prefix
    (`/static*` also matches `/static.css` and `/staticfoo`); any other entry
    matches exactly (`/health` matches neither `/health/` nor `/health/x`).
    The query string never matters. A path `normalise_path` refuses never matches.
    """

    prefixes: tuple[str, ...]
    exact: frozenset[str]

    @classmethod
    def build(cls, paths: list[str]) -> PublicPaths:
        prefixes = tuple(p for p in paths if p.endswith("/") or p.endswith("*"))
        exact = frozenset(p for p in paths if p not in prefixes)
        return cls(tuple(p.rstrip("*") for p in prefixes), exact)

    def __bool__(self) -> bool:
        return bool(self.prefixes or self.exact)

    def match(self, raw_path: str) -> bool:
        if not self:
            return False
        path = normalise_path(raw_path)
        if path is None:
            return False
        return path in self.exact or path.startswith(self.prefixes)
