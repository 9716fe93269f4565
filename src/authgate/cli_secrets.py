"""`authgate secrets keygen|encrypt`: the master key, and client secrets sealed with it."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from authgate.secrets import encrypt, generate_key, load_master_key
from authgate.settings import SecretsSettings

EXIT_USAGE = 2


def cmd_keygen(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def _read_secret() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("secret to encrypt: ")
    return sys.stdin.read().rstrip("\r\n")


def cmd_encrypt(args: argparse.Namespace) -> int:
    """Reads the secret from stdin (never argv, which shows in `ps` and shell history)."""
    try:
        key = load_master_key(SecretsSettings(master_key_file=args.key_file))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    secret = _read_secret()
    if not secret:
        print("error: the secret is empty", file=sys.stderr)
        return EXIT_USAGE
    print(encrypt(secret, key))
    return 0


def add_commands(sub: Any) -> None:
    secrets = sub.add_parser("secrets", help="encrypt client secrets for the config file")
    actions = secrets.add_subparsers(dest="action", required=True, metavar="ACTION")
    keygen = actions.add_parser("keygen", help="print a new master key (AUTHGATE_MASTER_KEY)")
    keygen.set_defaults(func=cmd_keygen)
    enc = actions.add_parser(
        "encrypt",
        help="read a secret on stdin, print it encrypted for client_secret_encrypted",
    )
    enc.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="master key file (default: the AUTHGATE_MASTER_KEY environment variable)",
    )
    enc.set_defaults(func=cmd_encrypt)
