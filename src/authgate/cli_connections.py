"""`authgate test CONN`: probe a connection as sign-in would, and say what is wrong."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import aiohttp

from authgate.connections import build_engine
from authgate.errors import LoginFailed
from authgate.protocols.base import ProtocolContext
from authgate.secrets import SecretBox
from authgate.session.memory import MemoryStore
from authgate.session.replay import ReplayCache
from authgate.settings import Settings, default_config_path, load_settings

EXIT_PROBLEM = 1
EXIT_USAGE = 2


def connection_problems(settings: Settings, conn: Any) -> list[str]:
    """Problems visible without the network, for `authgate status`."""
    if conn.type != "oidc":
        return []
    box = SecretBox(settings.secrets)
    problems = []
    for where, cipher in (
        ("client_secret_encrypted", conn.client_secret_encrypted),
        (
            "graph.client_secret_encrypted",
            conn.graph.client_secret_encrypted if conn.graph else None,
        ),
    ):
        if cipher is None:
            continue
        try:
            box.reveal(None, cipher)
        except LoginFailed as exc:
            problems.append(f"{where}: {exc.reason}: {exc.detail}")
    return problems


async def _probe(settings: Settings, conn: Any) -> list[tuple[bool, str]]:
    async with aiohttp.ClientSession(headers={"User-Agent": "authgate"}) as http:
        kv = MemoryStore()
        ctx = ProtocolContext(settings=settings, http=http, kv=kv, replay=ReplayCache(kv))
        return await build_engine(conn, ctx).probe()


def cmd_test(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    conn = settings.connection(args.connection)
    if conn is None:
        known = ", ".join(c.id for c in settings.connections) or "none"
        print(f"error: no connection {args.connection!r} (configured: {known})", file=sys.stderr)
        return EXIT_USAGE
    print(f"connection {conn.id} ({conn.type}, {conn.name})")
    lines = asyncio.run(_probe(settings, conn))
    for ok, line in lines:
        print(f"{'ok ' if ok else 'FAIL'} {line}")
    failed = sum(not ok for ok, _ in lines)
    print("result: OK" if not failed else f"result: {failed} problem(s)")
    return EXIT_PROBLEM if failed else 0


def add_commands(sub: Any) -> None:
    test = sub.add_parser(
        "test",
        help="probe a connection (OIDC discovery, JWKS, credentials; SAML IdP metadata);"
        " exit 1 on problems",
    )
    test.add_argument("connection", help="connection id")
    test.add_argument("--config", default=default_config_path())
    test.set_defaults(func=cmd_test)
