"""Command line: argv -> settings -> action; errors are sentences and exit codes, not traces."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import sys
from collections.abc import Callable, Sequence

from authgate import demo, workers
from authgate.app import build_store
from authgate.cli_connections import add_commands as add_connection_commands
from authgate.cli_connections import connection_problems
from authgate.cli_provisioning import add_commands
from authgate.cli_saml import add_commands as add_saml_commands
from authgate.cli_saml import metadata_status
from authgate.cli_secrets import add_commands as add_secrets_commands
from authgate.devidp import NotLoopback
from authgate.errors import StoreUnavailable
from authgate.settings import ConfigError, Settings, default_config_path, load_config, load_settings
from authgate.status import ConnectionStatus

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
log = logging.getLogger("authgate")


def _load(path: str) -> Settings:
    return load_settings(path)


def cmd_run(args: argparse.Namespace) -> int:
    """Serve; never with a placeholder secret, and never without saying what else is one."""
    loaded = load_config(args.config)
    refused = loaded.placeholder_secrets()
    if refused:
        raise ConfigError(refused)
    workers.configure_logging(args.log_level)
    for warning in loaded.warnings():
        log.warning("%s", warning)
    return workers.run(loaded.settings, args.log_level, force_retire=args.force_retire)


def _demo_port(value: str) -> int:
    """The IdP takes the next port, so the last usable one is 65534."""
    if not value.isdigit() or int(value) > 65534:
        raise argparse.ArgumentTypeError("expected a port from 0 to 65534")
    return int(value)


def cmd_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(demo.run(args.host, args.port, args.force))
    except NotLoopback as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"error: {exc} (choose other ports with --port)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Valid is exit 0, placeholders included: they are warnings here (CI checks the examples)."""
    loaded = load_config(args.file)
    settings = loaded.settings
    count, store = len(settings.connections), settings.session.store
    print(f"{args.file}: OK ({count} connection(s), store {store})")
    for warning in loaded.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _when(value: str | None) -> str:
    if not value:
        return "never"
    return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _status(settings: Settings) -> int:
    kv = build_store(settings)
    try:
        await kv.ping()
        status = ConnectionStatus(kv)
        print(f"store: {settings.session.store} reachable")
        for conn in settings.connections:
            info = await status.get(conn.id)
            failure = "none"
            if info.get("last_failure_at"):
                failure = (
                    f"{info['last_failure_reason']} at {_when(info['last_failure_at'])}"
                    f" (correlation id {info.get('last_failure_correlation_id', '-')})"
                )
            print(
                f"connection {conn.id} ({conn.type}, {conn.name}):"
                f" last success {_when(info.get('last_success_at'))}; last failure {failure}"
            )
            for problem in connection_problems(settings, conn):
                print(f"  problem: {problem}")
            for line in await metadata_status(kv, conn):
                print(f"  {line}")
        return 0
    finally:
        await kv.close()


def cmd_status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(_load(args.config)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authgate", description="SAML and OIDC authentication sidecar"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="serve the authenticating proxy")
    run.add_argument(
        "--config",
        default=default_config_path(),
        help="config file (default $AUTHGATE_CONFIG or /etc/authgate/authgate.yaml)",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--force-retire",
        action="store_true",
        help="retire removed connections even if no admin could sign in afterwards",
    )
    run.set_defaults(func=cmd_run)

    demo_cmd = sub.add_parser(
        "demo",
        help="try a complete sign-in: development IdP, example app and authgate in one process",
    )
    demo_cmd.add_argument(
        "--port",
        type=_demo_port,
        default=demo.DEFAULT_PORT,
        help="authgate's port; the development IdP takes the next one (default 4180; 0: any)",
    )
    demo_cmd.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    demo_cmd.add_argument(
        "--force",
        action="store_true",
        help="listen on a non-loopback --host anyway (its test users' password is public)",
    )
    demo_cmd.set_defaults(func=cmd_demo)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", nargs="?", default=default_config_path())
    check.set_defaults(func=cmd_check_config)

    status = sub.add_parser("status", help="show connections and their last failures")
    status.add_argument("--config", default=default_config_path())
    status.set_defaults(func=cmd_status)
    add_commands(sub)
    add_secrets_commands(sub)
    add_connection_commands(sub)
    add_saml_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreUnavailable as exc:
        print(f"error: the session store is unreachable ({exc.detail})", file=sys.stderr)
        return EXIT_UNAVAILABLE
