"""Where the development IdP may listen: loopback only, unless the operator insists."""

from __future__ import annotations

import ipaddress

from authgate.devidp.pages import log


class NotLoopback(ValueError):
    """The development IdP was asked to listen where others could reach it."""


def is_loopback(host: str) -> bool:
    """A loopback address literal (bracketed or not) or the name `localhost`, nothing else."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def require_loopback(host: str, force: bool = False) -> None:
    """Refuse any bind address but loopback: this IdP signs anyone in with a public password."""
    if force:
        log.warning(
            "listening on %s because --force was given: anyone who can reach it can sign in"
            " as any test user",
            host,
        )
        return
    if not is_loopback(host):
        raise NotLoopback(
            f"the development IdP refuses to listen on {host!r}: only a loopback address"
            " (127.0.0.1, ::1, localhost) is allowed, because its users and password are public"
            " (pass --force to override)"
        )
