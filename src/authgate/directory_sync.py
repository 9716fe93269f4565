"""Entra ID group sync: groups' transitive members, read from Microsoft Graph, as allowlists
and export files. Each configuration (`directory_sync[]`, by name) syncs on its own.

Graph is called app-only (`authgate.graph`): a client-credentials token, then
`GET {graph_url}/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user?$select=...`
page after page, with throttling and backoff handled there.

A configuration's member list is kept in the shared store under a generation
pointer, so a replica reads either the old or the new list, never half of one;
a failed sync leaves the last good list in force and records the failure.
A connection named by several configurations admits the members of any of
them: after a good sync every session of a user of those connections who is
in none of their lists is revoked, and the login path refuses such people
(`not_a_member`).

Membership is matched case-insensitively on the member's object id, `mail`
and `userPrincipalName` against the identity's email, username, subject and
object id claim (`oid`, or Entra's SAML objectidentifier claim).

The export (one line per member from the configuration's template) is written
by every replica from the shared list, by rename, whenever a new list is out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from authgate.audit import AuditLog
from authgate.errors import OperatorError, PolicyDenied
from authgate.graph import Credentials, Graph, GraphError, Limits
from authgate.identity import Identity
from authgate.retirement import Lifecycle
from authgate.session.kv import KeyValueStore
from authgate.settings import LEGACY_SYNC_NAME, DirectoryExport, DirectorySyncSettings
from authgate.users import User

log = logging.getLogger("authgate.directory")
Sleep = Callable[[float], Awaitable[None]]
MAX_PAGES = 10_000
PAGE_SIZE = 999
OBJECT_ID_CLAIMS = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")


class DirectorySyncError(OperatorError):
    """A sync that did not complete; `reason` is a stable code, `detail` a sentence."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}", reason)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    mail: str | None = None
    user_principal_name: str | None = None
    mobile_phone: str | None = None
    display_name: str | None = None
    # Every selected property that came as text, by its Graph name (for export templates).
    properties: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_graph(cls, item: dict[str, Any]) -> Member:
        texts = {
            k: v for k, v in item.items() if isinstance(v, str) and v and not k.startswith("@")
        }
        return cls(
            id=str(item.get("id", "")),
            mail=texts.get("mail"),
            user_principal_name=texts.get("userPrincipalName"),
            mobile_phone=texts.get("mobilePhone"),
            display_name=texts.get("displayName"),
            properties=texts,
        )

    def keys(self) -> set[str]:
        return {k.lower() for k in (self.id, self.mail, self.user_principal_name) if k}


def identity_keys(identity: Identity) -> set[str]:
    values = [identity.email, identity.username, identity.subject]
    values += [identity.attributes.get(c) for c in OBJECT_ID_CLAIMS]
    return {v.lower() for v in values if isinstance(v, str) and v}


def user_keys(user: User) -> set[str]:
    return {v.lower() for v in (user.email, user.external_id, user.username) if v}


def _first_page(cfg: DirectorySyncSettings) -> str:
    fields = ",".join(cfg.properties)
    return (
        f"{cfg.graph_url}/v1.0/groups/{quote(cfg.group_id, safe='')}"
        f"/transitiveMembers/microsoft.graph.user?$select={fields}&$top={PAGE_SIZE}"
    )


async def group_members(graph: Graph, cfg: DirectorySyncSettings) -> list[Member]:
    """Every transitive user member of the group, all pages, by object id."""
    found: dict[str, Member] = {}
    try:
        token = await graph.token(cfg.tenant_id)
        async for items in graph.pages(token, _first_page(cfg), MAX_PAGES):
            for item in items:
                if item.get("id"):
                    member = Member.from_graph(item)
                    found[member.id] = member
    except GraphError as exc:
        raise DirectorySyncError(exc.reason, exc.detail) from None
    return sorted(found.values(), key=lambda m: m.id)


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: str
    synced_at: float
    members: list[Member]

    def keys(self) -> set[str]:
        return set().union(*(m.keys() for m in self.members)) if self.members else set()


class Allowlist:
    """One configuration's last good member list, shared by all replicas through the store.

    Keys under `dirsync:{name}:` (`dirsync:` for the configuration named
    `default`, as the single-configuration form always stored it): `current`
    (generation, time, count), `keys:{gen}` (the match keys, read at login),
    `list:{gen}` (the members, for export and auditing), `status` (last
    success / failure) and `lock` (which replica syncs this interval).
    """

    def __init__(self, kv: KeyValueStore, name: str = LEGACY_SYNC_NAME) -> None:
        self._kv = kv
        self.prefix = "dirsync:" if name == LEGACY_SYNC_NAME else f"dirsync:{name}:"

    async def _pointer(self) -> dict[str, Any] | None:
        raw = await self._kv.get(self.prefix + "current")
        return json.loads(raw) if raw else None

    async def keys(self) -> set[str] | None:
        """The match keys in force, or None when no sync has ever succeeded."""
        for _ in range(2):
            pointer = await self._pointer()
            if pointer is None:
                return None
            raw = await self._kv.get(self.prefix + "keys:" + pointer["generation"])
            if raw is not None:
                return set(json.loads(raw))
        return None

    async def snapshot(self) -> Snapshot | None:
        pointer = await self._pointer()
        if pointer is None:
            return None
        raw = await self._kv.get(self.prefix + "list:" + pointer["generation"])
        if raw is None:
            return None
        members = [Member(**m) for m in json.loads(raw)]
        return Snapshot(pointer["generation"], pointer["synced_at"], members)

    async def replace(self, members: list[Member]) -> Snapshot:
        """Publish a new list; readers switch when the pointer moves, then the old one goes."""
        previous = await self._pointer()
        snapshot = Snapshot(secrets.token_hex(8), time.time(), members)
        gen = snapshot.generation
        await self._kv.set(
            self.prefix + "list:" + gen, json.dumps([asdict(m) for m in members]).encode()
        )
        await self._kv.set(
            self.prefix + "keys:" + gen, json.dumps(sorted(snapshot.keys())).encode()
        )
        pointer = {"generation": gen, "synced_at": snapshot.synced_at, "count": len(members)}
        await self._kv.set(self.prefix + "current", json.dumps(pointer).encode())
        if previous is not None:
            old = previous["generation"]
            await self._kv.delete(self.prefix + "list:" + old, self.prefix + "keys:" + old)
        return snapshot

    async def record(self, **fields: str) -> None:
        await self._kv.hset(self.prefix + "status", fields)

    async def status(self) -> dict[str, str]:
        return await self._kv.hgetall(self.prefix + "status")


async def allowed_keys(
    kv: KeyValueStore, cfgs: Sequence[DirectorySyncSettings], connection: str
) -> set[str] | None:
    """The members of every list that guards `connection`; None when none was synced yet."""
    lists = [await Allowlist(kv, c.name).keys() for c in cfgs if connection in c.connections]
    synced = [keys for keys in lists if keys is not None]
    return set().union(*synced) if synced else None


async def check_member(
    kv: KeyValueStore, cfgs: Sequence[DirectorySyncSettings], who: Identity
) -> None:
    """Refuse a sign-in through a synced connection by someone in none of its groups."""
    guarding = [c for c in cfgs if who.connection in c.connections]
    if not guarding:
        return
    keys = await allowed_keys(kv, guarding, who.connection)
    if keys is None:
        raise PolicyDenied("not_a_member", "the directory group has not been synced yet")
    if not identity_keys(who) & keys:
        groups = ", ".join(c.group_id for c in guarding)
        raise PolicyDenied(
            "not_a_member", f"{who.email or who.subject} is not in directory group {groups}"
        )


@dataclass(frozen=True)
class SyncResult:
    members: int
    added: int
    removed: int
    sessions_revoked: int
    snapshot: Snapshot


class DirectorySync:
    """One sync: fetch, publish, revoke the sessions of non-members, audit."""

    def __init__(
        self,
        cfg: DirectorySyncSettings,
        kv: KeyValueStore,
        lifecycle: Lifecycle,
        audit: AuditLog,
        http: aiohttp.ClientSession,
        sleep: Sleep = asyncio.sleep,
        peers: Sequence[DirectorySyncSettings] = (),
    ) -> None:
        """`peers`: every configuration (this one included), for connections that share."""
        self.cfg = cfg
        self.peers = tuple(peers) or (cfg,)
        self.allowlist = Allowlist(kv, cfg.name)
        self._exported: str | None = None
        self._kv = kv
        self._lifecycle = lifecycle
        self._audit = audit
        credentials = Credentials(cfg.client_id, cfg.client_secret, cfg.login_url, cfg.graph_url)
        limits = Limits(cfg.timeout, cfg.max_retries, cfg.backoff, cfg.max_retry_after)
        self._graph = Graph(http, credentials, limits, sleep)

    async def run_once(self) -> SyncResult:
        """Sync now; on failure the last good list stays in force and the failure is recorded."""
        self._audit.emit("directory.sync.started", name=self.cfg.name, group_id=self.cfg.group_id)
        try:
            members = await group_members(self._graph, self.cfg)
        except DirectorySyncError as exc:
            await self._failed(exc)
            raise
        previous = await self.allowlist.snapshot()
        snapshot = await self.allowlist.replace(members)
        old_ids = {m.id for m in previous.members} if previous else set()
        new_ids = {m.id for m in members}
        for member in previous.members if previous else []:
            if member.id not in new_ids:
                self._audit.emit(
                    "directory.sync.member_removed",
                    name=self.cfg.name,
                    group_id=self.cfg.group_id,
                    member_id=member.id,
                    email=member.mail or member.user_principal_name,
                )
        revoked = await self._revoke_non_members()
        unnamed = sum(1 for m in members if m.user_principal_name is None)
        if unnamed:
            log.warning(
                "directory sync %s: %d member(s) came without userPrincipalName: the app"
                " needs User.Read.All (or User.ReadBasic.All) besides GroupMember.Read.All",
                self.cfg.name,
                unnamed,
            )
        result = SyncResult(
            len(members), len(new_ids - old_ids), len(old_ids - new_ids), revoked, snapshot
        )
        await self.allowlist.record(
            last_success_at=str(snapshot.synced_at), members=str(len(members))
        )
        self._audit.emit(
            "directory.sync.completed",
            name=self.cfg.name,
            group_id=self.cfg.group_id,
            members=result.members,
            added=result.added,
            removed=result.removed,
            sessions_revoked=revoked,
            without_user_principal_name=unnamed,
        )
        return result

    async def _failed(self, exc: DirectorySyncError) -> None:
        last = await self.allowlist.snapshot()
        await self.allowlist.record(
            last_failure_at=str(time.time()),
            last_failure_reason=exc.reason,
            last_failure_detail=exc.detail,
        )
        self._audit.emit(
            "directory.sync.failed",
            name=self.cfg.name,
            group_id=self.cfg.group_id,
            reason=exc.reason,
            detail=exc.detail,
            kept_members=len(last.members) if last else None,
            kept_since=last.synced_at if last else None,
        )
        log.error(
            "directory sync %s failed (%s): %s; keeping the last good list",
            self.cfg.name,
            exc.reason,
            exc,
        )

    async def _revoke_non_members(self) -> int:
        revoked = 0
        for conn_id in self.cfg.connections:
            keys = await allowed_keys(self._kv, self.peers, conn_id) or set()
            for user in await self._lifecycle.users.list_users(conn_id):
                if user_keys(user) & keys:
                    continue
                live = await self._lifecycle.sessions.revoke_user(user.id)
                if live:
                    revoked += live
                    self._audit.emit(
                        "session.revoked",
                        connection=conn_id,
                        user_id=user.id,
                        reason="not_a_member",
                        sessions=live,
                    )
        return revoked

    async def run_forever(self) -> None:
        """Every interval: the sync on the one replica that takes the lock for it, then on
        every replica the export file, when the configuration has one."""
        while True:
            try:
                if await self._kv.set(
                    self.allowlist.prefix + "lock",
                    b"1",
                    ttl=self.cfg.interval * 0.9,
                    only_if_new=True,
                ):
                    await self.run_once()
            except DirectorySyncError:
                pass
            except Exception:
                log.exception(
                    "directory sync %s crashed; trying again next interval", self.cfg.name
                )
            try:
                await self.write_export()
            except OSError as exc:
                log.error("directory sync %s: cannot write its export: %s", self.cfg.name, exc)
            await asyncio.sleep(self.cfg.interval)

    async def write_export(self) -> Exported | None:
        """Write `export.path` from the list in force, unless this replica already wrote it."""
        path = self.cfg.export_settings.path
        snapshot = await self.allowlist.snapshot()
        if path is None or snapshot is None or snapshot.generation == self._exported:
            return None
        settings = self.cfg.export_settings
        exported = await asyncio.to_thread(export, snapshot.members, settings, path)
        self._exported = snapshot.generation
        log.info(
            "directory sync %s: %d line(s) written to %s, %d member(s) skipped",
            self.cfg.name,
            exported.lines,
            path,
            exported.skipped,
        )
        return exported


@dataclass(frozen=True, slots=True)
class Exported:
    lines: int
    skipped: int


def export_lines(members: Iterable[Member], settings: DirectoryExport) -> tuple[list[str], int]:
    """One line per member from the template, and how many were skipped for an empty key."""
    template = settings.line_template
    keys = template.key_fields(settings.key)
    lines: list[str] = []
    skipped = 0
    for member in members:
        line = template.render(member.properties, keys)
        if line is None:
            skipped += 1
        else:
            lines.append(line)
    return lines, skipped


def export(members: Iterable[Member], settings: DirectoryExport, path: Path) -> Exported:
    """Write the lines beside `path`, then rename: a reader sees the old file or the new one."""
    lines, skipped = export_lines(members, settings)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return Exported(len(lines), skipped)
