"""`authgate keys generate` and `authgate metadata CONN`: SAML SP material for operators."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from authgate.keys import DEFAULT_BITS, DEFAULT_DAYS, write_pair
from authgate.protocols.saml_config import SpEndpoints, sp_config, sp_metadata
from authgate.session.kv import KeyValueStore
from authgate.settings import SamlConnection, default_config_path, load_settings

EXIT_USAGE = 2


def cmd_keys_generate(args: argparse.Namespace) -> int:
    try:
        write_pair(args.key_out, args.cert_out, args.cn, args.days, args.bits, args.force)
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {args.key_out} (private key, mode 0600) and {args.cert_out} (certificate)")
    print("add them to the connection as sp_keys: [{key_file: ..., cert_file: ...}]")
    return 0


def cmd_metadata(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    conn = settings.connection(args.connection)
    if not isinstance(conn, SamlConnection):
        saml = ", ".join(c.id for c in settings.connections if c.type == "saml") or "none"
        print(
            f"error: {args.connection!r} is not a SAML connection (SAML: {saml})", file=sys.stderr
        )
        return EXIT_USAGE
    sys.stdout.write(sp_metadata(sp_config(conn, SpEndpoints.build(conn, settings))).decode())
    return 0


async def metadata_status(kv: KeyValueStore, conn: Any) -> list[str]:
    """IdP metadata freshness as the running replicas last recorded it, for `authgate status`."""
    if conn.type != "saml":
        return []
    info = await kv.hgetall("saml-metadata:" + conn.id)
    if not info:
        return ["IdP metadata: no replica has loaded it yet"]
    lines = [f"IdP metadata: {info.get('metadata_problem') or 'usable and fresh'}"]
    if info.get("metadata_error"):
        lines.append(f"last metadata refresh failed: {info['metadata_error']}")
    return lines


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="SAML SP key material")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = actions.add_parser(
        "generate", help="write an RSA key and a self-signed SHA-256 certificate"
    )
    generate.add_argument("--key-out", type=Path, default=Path("sp.key"))
    generate.add_argument("--cert-out", type=Path, default=Path("sp.crt"))
    generate.add_argument("--cn", default="authgate", help="certificate common name")
    generate.add_argument("--days", type=int, default=DEFAULT_DAYS)
    generate.add_argument("--bits", type=int, default=DEFAULT_BITS, choices=[2048, 3072, 4096])
    generate.add_argument("--force", action="store_true", help="replace existing files")
    generate.set_defaults(func=cmd_keys_generate)

    metadata = sub.add_parser("metadata", help="print the SP metadata of a SAML connection")
    metadata.add_argument("connection", help="connection id")
    metadata.add_argument("--config", default=default_config_path())
    metadata.set_defaults(func=cmd_metadata)
