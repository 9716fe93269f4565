"""Whether a browser request was made by a page of authgate's own origin.

A session cookie is ambient authority: any site can make the browser send it.
State changes made with one (admin writes, sign-out) must also prove they come
from our own pages: `Sec-Fetch-Site`, then `Origin`, then `Referer` must name
authgate's public origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from multidict import MultiMapping

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """`scheme://host:port` with the default port spelled out; None for anything unusable."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def from_own_page(headers: MultiMapping[str], origin: str) -> bool:
    """True only when the browser says the request comes from a page of `origin`."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return False
    source = headers.get("Origin") or headers.get("Referer")
    return source is not None and origin_of(source) == origin
