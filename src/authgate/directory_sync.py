"""Entra ID group sync: one group's transitive members, read from Microsoft Graph, as an allowlist.

Graph is called app-only (`authgate.graph`): a client-credentials token, then
`GET {graph_url}/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user?$select=...`
page after page, with throttling and backoff handled there.

The member list is kept in the shared store under a generation pointer, so a
replica reads either the old or the new list, never half of one; a failed
sync leaves the last good list in force and records the failure. After a
good sync every session of a user of the configured connections who is not a
member is revoked, and the login path refuses non-members (`not_a_member`).

Membership is matched case-insensitively on the member's object id, `mail`
and `userPrincipalName` against the identity's email, username, subject and
object id claim (`oid`, or Entra's SAML objectidentifier claim).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from authgate.audit import AuditLog
from authgate.errors import PolicyDenied
from authgate.graph import Credentials, Graph, GraphError, Limits
from authgate.identity import Identity
from authgate.retirement import Lifecycle
from authgate.session.kv import KeyValueStore
from authgate.settings import DirectorySyncSettings
from authgate.users import User

log = logging.getLogger("authgate.directory")
Sleep = Callable[[float], Awaitable[None]]
MAX_PAGES = 10_000
PAGE_SIZE = 999
OBJECT_ID_CLAIMS = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class DirectorySyncError(Exception):
    """A sync that did not complete; `reason` is a stable code, `detail` a sentence."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    mail: str | None = None
    user_principal_name: str | None = None
    mobile_phone: str | None = None
    display_name: str | None = None

    @classmethod
    def from_graph(cls, item: dict[str, Any]) -> Member:
        def text(name: str) -> str | None:
            value = item.get(name)
            return value if isinstance(value, str) and value else None

        return cls(
            id=str(item.get("id", "")),
            mail=text("mail"),
            user_principal_name=text("userPrincipalName"),
            mobile_phone=text("mobilePhone"),
            display_name=text("displayName"),
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
    fields = ",".join(dict.fromkeys(["id", *cfg.select]))
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
    """The last good member list, shared by all replicas through the store.

    Keys: `dirsync:current` (generation, time, count), `dirsync:keys:{gen}`
    (the match keys, read at login) and `dirsync:list:{gen}` (the members,
    for export and auditing), `dirsync:status` (last success / failure).
    """

    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    async def _pointer(self) -> dict[str, Any] | None:
        raw = await self._kv.get("dirsync:current")
        return json.loads(raw) if raw else None

    async def keys(self) -> set[str] | None:
        """The match keys in force, or None when no sync has ever succeeded."""
        for _ in range(2):
            pointer = await self._pointer()
            if pointer is None:
                return None
            raw = await self._kv.get("dirsync:keys:" + pointer["generation"])
            if raw is not None:
                return set(json.loads(raw))
        return None

    async def snapshot(self) -> Snapshot | None:
        pointer = await self._pointer()
        if pointer is None:
            return None
        raw = await self._kv.get("dirsync:list:" + pointer["generation"])
        if raw is None:
            return None
        members = [Member(**m) for m in json.loads(raw)]
        return Snapshot(pointer["generation"], pointer["synced_at"], members)

    async def replace(self, members: list[Member]) -> Snapshot:
        """Publish a new list; readers switch when the pointer moves, then the old one goes."""
        previous = await self._pointer()
        snapshot = Snapshot(secrets.token_hex(8), time.time(), members)
        gen = snapshot.generation
        await self._kv.set("dirsync:list:" + gen, json.dumps([asdict(m) for m in members]).encode())
        await self._kv.set("dirsync:keys:" + gen, json.dumps(sorted(snapshot.keys())).encode())
        pointer = {"generation": gen, "synced_at": snapshot.synced_at, "count": len(members)}
        await self._kv.set("dirsync:current", json.dumps(pointer).encode())
        if previous is not None:
            old = previous["generation"]
            await self._kv.delete("dirsync:list:" + old, "dirsync:keys:" + old)
        return snapshot

    async def record(self, **fields: str) -> None:
        await self._kv.hset("dirsync:status", fields)

    async def status(self) -> dict[str, str]:
        return await self._kv.hgetall("dirsync:status")


async def check_member(kv: KeyValueStore, cfg: DirectorySyncSettings | None, who: Identity) -> None:
    """Refuse a sign-in through a synced connection by someone outside the group."""
    if cfg is None or who.connection not in cfg.connections:
        return
    keys = await Allowlist(kv).keys()
    if keys is None:
        raise PolicyDenied("not_a_member", "the directory group has not been synced yet")
    if not identity_keys(who) & keys:
        raise PolicyDenied(
            "not_a_member", f"{who.email or who.subject} is not in directory group {cfg.group_id}"
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
    ) -> None:
        self.cfg = cfg
        self.allowlist = Allowlist(kv)
        self._kv = kv
        self._lifecycle = lifecycle
        self._audit = audit
        credentials = Credentials(cfg.client_id, cfg.client_secret, cfg.login_url, cfg.graph_url)
        limits = Limits(cfg.timeout, cfg.max_retries, cfg.backoff, cfg.max_retry_after)
        self._graph = Graph(http, credentials, limits, sleep)

    async def run_once(self) -> SyncResult:
        """Sync now; on failure the last good list stays in force and the failure is recorded."""
        self._audit.emit("directory.sync.started", group_id=self.cfg.group_id)
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
                    group_id=self.cfg.group_id,
                    member_id=member.id,
                    email=member.mail or member.user_principal_name,
                )
        revoked = await self._revoke_non_members(snapshot.keys())
        result = SyncResult(
            len(members), len(new_ids - old_ids), len(old_ids - new_ids), revoked, snapshot
        )
        await self.allowlist.record(
            last_success_at=str(snapshot.synced_at), members=str(len(members))
        )
        self._audit.emit(
            "directory.sync.completed",
            group_id=self.cfg.group_id,
            members=result.members,
            added=result.added,
            removed=result.removed,
            sessions_revoked=revoked,
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
            group_id=self.cfg.group_id,
            reason=exc.reason,
            detail=exc.detail,
            kept_members=len(last.members) if last else None,
            kept_since=last.synced_at if last else None,
        )
        log.error("directory sync failed (%s): %s; keeping the last good list", exc.reason, exc)

    async def _revoke_non_members(self, keys: set[str]) -> int:
        revoked = 0
        for conn_id in self.cfg.connections:
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
        """Every interval, on the one replica that takes the lock for it."""
        while True:
            try:
                if await self._kv.set(
                    "dirsync:lock", b"1", ttl=self.cfg.interval * 0.9, only_if_new=True
                ):
                    await self.run_once()
            except DirectorySyncError:
                pass
            except Exception:
                log.exception("directory sync crashed; trying again next interval")
            await asyncio.sleep(self.cfg.interval)


def _field(value: str | None) -> str:
    """A value safe for one TSV cell: no tabs, newlines or other control characters."""
    return _CONTROL.sub(" ", value or "").strip()


def export_lines(members: Iterable[Member]) -> list[str]:
    """`email<TAB>mobilePhone` per member (mail, else the UPN)."""
    return [f"{_field(m.mail or m.user_principal_name)}\t{_field(m.mobile_phone)}" for m in members]


def export(members: Iterable[Member], path: Path) -> int:
    lines = export_lines(members)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
