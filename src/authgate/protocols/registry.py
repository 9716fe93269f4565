"""One connection's settings in, its protocol engine out."""

from __future__ import annotations

from typing import Any

from authgate.protocols.base import Protocol, ProtocolContext
from authgate.protocols.oidc import OidcProtocol
from authgate.protocols.saml import SamlProtocol


def build_protocol(conn: Any, ctx: ProtocolContext) -> Protocol:
    if conn.type == "oidc":
        return OidcProtocol(conn, ctx)
    if conn.type == "saml":
        return SamlProtocol(conn, ctx)
    raise ValueError(f"no protocol engine for connection type {conn.type!r}")
