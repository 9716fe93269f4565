"""Provisioning commands: `scim token`, `admin token`, `users`, `directory sync`,
`connections retire`.

Each works on the configured store (Redis in production), so what it changes
is seen at once by every running replica.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from authgate.app import build_store
from authgate.audit import AuditLog
from authgate.csv_import import CsvFileError, import_users
from authgate.directory_sync import DirectorySync, DirectorySyncError, Exported, export
from authgate.retirement import Lifecycle, check_admin_safety, file_rules
from authgate.scim.tokens import ScimTokens
from authgate.session.kv import KeyValueStore
from authgate.session.sessions import SessionStore
from authgate.settings import (
    ConfigError,
    DirectorySyncSettings,
    Settings,
    default_config_path,
    load_settings,
)
from authgate.tokens import AdminTokens, BearerTokens
from authgate.users import UserStore

EXIT_PARTIAL = 1


def _stamp(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _lifecycle(settings: Settings, kv: KeyValueStore) -> Lifecycle:
    sess = settings.session
    return Lifecycle(
        UserStore(kv),
        SessionStore(kv, sess.lifetime, sess.idle_timeout),
        AuditLog(settings.audit.output),
        ScimTokens(kv),
    )


def _run(args: argparse.Namespace, action: Callable[..., Awaitable[int]]) -> int:
    """Load the config, open the store, run `action(args, settings, kv)`, close the store."""
    settings = load_settings(args.config)

    async def main() -> int:
        kv = build_store(settings)
        try:
            await kv.ping()
            return await action(args, settings, kv)
        finally:
            await kv.close()

    return asyncio.run(main())


def _connection(args: argparse.Namespace, settings: Settings, conn_id: str) -> str:
    if settings.connection(conn_id) is None:
        raise ConfigError([f"{args.config}: no connection has id {conn_id!r}"])
    return conn_id


async def _token_create(args: argparse.Namespace, settings: Settings, kv: KeyValueStore) -> int:
    conn_id = _connection(args, settings, args.connection)
    info, secret = await ScimTokens(kv).create(conn_id, args.description)
    AuditLog(settings.audit.output).emit(
        "scim.token.created", connection=conn_id, token_id=info.id, actor="cli"
    )
    print(f"SCIM token {info.id} for connection {conn_id} (shown once, store it now):")
    print(f"  {secret}")
    print(f"Tenant URL: {settings.scim_url}")
    return 0


async def _token_list(args: argparse.Namespace, settings: Settings, kv: KeyValueStore) -> int:
    for info in await ScimTokens(kv).list():
        print(f"{info.id}\t{info.connection}\t{_stamp(info.created_at)}\t{info.description}")
    return 0


def _revoker(
    store: type[BearerTokens], name: str, event: str
) -> Callable[[argparse.Namespace, Settings, KeyValueStore], Awaitable[int]]:
    """`... token revoke ID` for one kind of token: the same steps, its own words."""

    async def revoke(args: argparse.Namespace, settings: Settings, kv: KeyValueStore) -> int:
        if not await store(kv).revoke(args.token_id):
            print(f"error: no {name} has id {args.token_id!r}", file=sys.stderr)
            return EXIT_PARTIAL
        AuditLog(settings.audit.output).emit(event, token_id=args.token_id, actor="cli")
        print(f"{name} {args.token_id} revoked")
        return 0

    return revoke


async def _admin_token_create(
    args: argparse.Namespace, settings: Settings, kv: KeyValueStore
) -> int:
    info, secret = await AdminTokens(kv).create(description=args.description)
    AuditLog(settings.audit.output).emit("admin.token.created", token_id=info.id, actor="cli")
    print(f"Admin API token {info.id} (shown once, store it now; send it as Bearer):")
    print(f"  {secret}")
    return 0


async def _admin_token_list(args: argparse.Namespace, settings: Settings, kv: KeyValueStore) -> int:
    for info in await AdminTokens(kv).list():
        print(f"{info.id}\t{_stamp(info.created_at)}\t{info.description}")
    return 0


async def _users_import(args: argparse.Namespace, settings: Settings, kv: KeyValueStore) -> int:
    conn_id = _connection(args, settings, args.connection)
    try:
        data = await asyncio.to_thread(Path(args.file).read_bytes)
    except OSError as exc:
        raise ConfigError([f"{args.file}: cannot read the file ({exc.strerror})"]) from None
    try:
        report = await import_users(data, conn_id, UserStore(kv), AuditLog(settings.audit.output))
    except CsvFileError as exc:
        raise ConfigError([f"{args.file}: {exc} (nothing was imported)"]) from None
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for line, external_id in report.skipped:
        print(f"line {line}: skipped, {external_id} is already present")
    for line, reason in report.failed:
        print(f"line {line}: failed, {reason}")
    print(report.summary())
    return EXIT_PARTIAL if report.failed else 0


async def _users_list(args: argparse.Namespace, settings: Settings, kv: KeyValueStore) -> int:
    conn_id = _connection(args, settings, args.connection) if args.connection else None
    for user in await UserStore(kv).list_users(conn_id):
        state = "retired" if user.retired else "active" if user.active else "inactive"
        print(
            f"{user.id}\t{user.connection}\t{user.external_id}\t{user.email or '-'}\t"
            f"{state}\t{','.join(user.roles) or '-'}\t{user.source}"
        )
    return 0


async def _users_retire(args: argparse.Namespace, settings: Settings, kv: KeyValueStore) -> int:
    lifecycle = _lifecycle(settings, kv)
    user = await lifecycle.users.get(args.user) or await lifecycle.users.by_email(args.user)
    if user is None:
        print(f"error: no user has id or email {args.user!r}", file=sys.stderr)
        return EXIT_PARTIAL
    await lifecycle.retire(user, "cli", actor="cli")
    print(f"user {user.id} ({user.email or user.external_id}) retired; sessions revoked")
    return 0


def _sync_configs(args: argparse.Namespace, settings: Settings) -> list[DirectorySyncSettings]:
    """The configurations `--name` picks (all without it); `--export` needs exactly one."""
    configs = settings.directory_sync
    if not configs:
        raise ConfigError([f"{args.config}: directory_sync is not configured"])
    if args.name is not None:
        configs = [c for c in configs if c.name == args.name]
        if not configs:
            names = ", ".join(c.name for c in settings.directory_sync)
            raise ConfigError(
                [f"{args.config}: no directory_sync is named {args.name!r} ({names})"]
            )
    if args.export and len(configs) > 1:
        names = ", ".join(c.name for c in configs)
        raise ConfigError([f"{args.config}: --export writes one list: add --name ({names})"])
    return configs


def _exported(exported: Exported, path: Path | str) -> str:
    return (
        f"exported {exported.lines} line(s) to {path};"
        f" {exported.skipped} member(s) skipped (empty key field)"
    )


async def _directory_sync(args: argparse.Namespace, settings: Settings, kv: KeyValueStore) -> int:
    configs = _sync_configs(args, settings)
    lifecycle = _lifecycle(settings, kv)
    failed = 0
    async with aiohttp.ClientSession(headers={"User-Agent": "authgate"}) as http:
        for cfg in configs:
            sync = DirectorySync(
                cfg, kv, lifecycle, lifecycle.audit, http, peers=settings.directory_sync
            )
            try:
                result = await sync.run_once()
            except DirectorySyncError as exc:
                last = await sync.allowlist.snapshot()
                kept = (
                    f"{len(last.members)} members from {_stamp(last.synced_at)}" if last else "none"
                )
                print(f"error: directory sync {cfg.name} failed: {exc}", file=sys.stderr)
                print(f"the last good member list stays in force ({kept})", file=sys.stderr)
                failed += 1
                continue
            print(
                f"{cfg.name}: group {cfg.group_id}: {result.members} members ({result.added}"
                f" added, {result.removed} removed); {result.sessions_revoked} session(s) revoked"
            )
            exported = await sync.write_export()
            if exported is not None:
                print(_exported(exported, cfg.export_settings.path or ""))
            if args.export:
                members = result.snapshot.members
                written = await asyncio.to_thread(
                    export, members, cfg.export_settings, Path(args.export)
                )
                print(_exported(written, args.export))
    return EXIT_PARTIAL if failed else 0


async def _connection_retire(
    args: argparse.Namespace, settings: Settings, kv: KeyValueStore
) -> int:
    conn = settings.connection(args.id)
    if conn is not None and conn.enabled and not args.force:
        raise ConfigError(
            [
                f"{args.config}: connection {args.id!r} is still enabled; remove it from the"
                " config (or set enabled: false) first, or pass --force"
            ]
        )
    lifecycle = _lifecycle(settings, kv)
    await check_admin_safety(
        lifecycle.users, settings.admin.role, file_rules(settings), {args.id}, args.force
    )
    count = await lifecycle.retire_connection(args.id, "cli")
    print(f"connection {args.id}: {count} user(s) retired, their sessions revoked")
    return 0


def _command(parser: Any, action: Callable[..., Awaitable[int]]) -> None:
    parser.add_argument(
        "--config",
        default=default_config_path(),
        help="config file (default $AUTHGATE_CONFIG or /etc/authgate/authgate.yaml)",
    )
    parser.set_defaults(func=lambda args: _run(args, action))


def add_commands(sub: Any) -> None:
    """Register the provisioning commands on the top-level subparsers."""
    scim = sub.add_parser("scim", help="SCIM bearer tokens").add_subparsers(
        dest="scim_command", required=True, metavar="COMMAND"
    )
    token = scim.add_parser("token", help="create, list or revoke SCIM tokens").add_subparsers(
        dest="token_command", required=True, metavar="ACTION"
    )
    create = token.add_parser("create", help="make a token for one connection (shown once)")
    create.add_argument("--connection", required=True, help="connection id the token provisions")
    create.add_argument("--description", default="", help="a note shown by `list`")
    _command(create, _token_create)
    _command(token.add_parser("list", help="list tokens (never their secrets)"), _token_list)
    revoke = token.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    _command(revoke, _revoker(ScimTokens, "SCIM token", "scim.token.revoked"))

    admin = sub.add_parser("admin", help="admin API credentials").add_subparsers(
        dest="admin_command", required=True, metavar="COMMAND"
    )
    admin_token = admin.add_parser(
        "token", help="create, list or revoke admin API tokens"
    ).add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = admin_token.add_parser("create", help="make a token for the admin API (shown once)")
    create.add_argument("--description", default="", help="a note shown by `list`")
    _command(create, _admin_token_create)
    _command(
        admin_token.add_parser("list", help="list tokens (never their secrets)"), _admin_token_list
    )
    revoke = admin_token.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    _command(revoke, _revoker(AdminTokens, "admin token", "admin.token.revoked"))

    users = sub.add_parser("users", help="import, list or retire users").add_subparsers(
        dest="users_command", required=True, metavar="ACTION"
    )
    imp = users.add_parser("import", help="import pre-provisioned users from a CSV file")
    imp.add_argument("--connection", required=True)
    imp.add_argument("file", help="CSV with ExternalId[,Email,DisplayName,Roles]")
    _command(imp, _users_import)
    listing = users.add_parser("list", help="list users (tab-separated)")
    listing.add_argument("--connection")
    _command(listing, _users_list)
    retire = users.add_parser("retire", help="retire a user and revoke every session")
    retire.add_argument("user", help="user id or email")
    _command(retire, _users_retire)

    directory = sub.add_parser("directory", help="Entra ID group sync").add_subparsers(
        dest="directory_command", required=True, metavar="ACTION"
    )
    sync = directory.add_parser("sync", help="sync the groups' members now")
    sync.add_argument("--once", action="store_true", required=True, help="run one sync and exit")
    sync.add_argument("--name", help="only the directory_sync configuration of this name")
    sync.add_argument(
        "--export", metavar="FILE", help="also write the configuration's export lines to FILE"
    )
    _command(sync, _directory_sync)

    connections = sub.add_parser("connections", help="retire a connection").add_subparsers(
        dest="connections_command", required=True, metavar="ACTION"
    )
    conn_retire = connections.add_parser("retire", help="retire every user of a connection")
    conn_retire.add_argument("id")
    conn_retire.add_argument(
        "--force", action="store_true", help="even if no admin could sign in afterwards"
    )
    _command(conn_retire, _connection_retire)
