"""Which URLs an outsider may make authgate fetch: https, at public internet addresses.

A setup-link holder (the customer's IT) sets the IdP metadata URL, and every
replica then GETs it from inside the operator's network. Left open, that is
a request forgery: `http://169.254.169.254/…` or `https://redis.internal:6379`
would be fetched, and the answer (HTTP 404, unreachable, not metadata) would
tell the holder what lives there. The rule is pure, so the settings can
refuse such a URL when a connection is read; `public_fetch` enforces it for
host names at connect time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

NOT_PUBLIC = "must be reachable at a public internet address over https"
Allowed = Callable[[str], bool]


def is_public(address: str) -> bool:
    """Globally routable unicast; an IPv4-mapped IPv6 address counts as its IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def url_problem(url: str, allowed: Allowed = is_public) -> str | None:
    """Why `url` may not be fetched for an outsider, or None; names are checked when resolved."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return NOT_PUBLIC
    literal = _literal(parts.hostname)
    if literal is not None and not allowed(literal):
        return NOT_PUBLIC
    return None
