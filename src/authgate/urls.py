"""Return-path validation (no open redirect) and public-path matching.

Both are places where a parser differential is an exploit: the browser, nginx
and the upstream framework must never read a URL differently from the way
authgate checked it. So both refuse anything ambiguous instead of guessing.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_CONTROL = re.compile(r"[\x00-\x20\x7f\\]")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e|25|00)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RedirectPolicy:
    """Local paths always; absolute URLs only to the public host or a listed host."""

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
        """`target` if it is a safe place to send the browser after sign-in, else `fallback`."""
        if not target or len(target) > 4096 or _CONTROL.search(target):
            return fallback
        decoded = unquote(target)
        if _CONTROL.search(decoded):
            return fallback
        if target.startswith("/"):
            if target.startswith("//") or decoded.startswith("//"):
                return fallback
            return target
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return fallback
        if "@" in parts.netloc or parts.hostname is None:
            return fallback
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            return fallback
        return target if self._host_allowed(parts.hostname) else fallback


def normalise_path(raw_path: str) -> str | None:
    """The path an upstream would resolve, or None if it cannot be read unambiguously.

    Percent-escapes are decoded, `;` path parameters dropped (Tomcat, Spring),
    backslashes read as slashes (IIS), empty segments collapsed and dot
    segments resolved. Doubly encoded separators or dots give None: some
    frameworks decode twice, so such a path is never treated as public.
    """
    path = raw_path.split("?", 1)[0]
    decoded = unquote(path)
    if _ENCODED_SEPARATOR.search(decoded) or "\x00" in decoded:
        return None
    segments = [seg.split(";", 1)[0] for seg in decoded.replace("\\", "/").split("/")]
    joined = "/" + "/".join(s for s in segments if s)
    normal = posixpath.normpath(joined)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if decoded.endswith("/") and normal != "/":
        normal += "/"
    return normal


@dataclass(frozen=True, slots=True)
class PublicPaths:
    """Prefixes that pass without a session; `/static/` matches below, `/health` exactly."""

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
