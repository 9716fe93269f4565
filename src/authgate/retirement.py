"""Taking access away: deactivation, retiring a connection's users, and the admin safety check.

Every path that ends a user's access (SCIM deactivate or delete, `authgate users
retire`, a connection removed from the config, directory sync) revokes the
user's sessions in the shared store, so every replica refuses the cookie on
its next request.

Connection ids seen in earlier configs are remembered in the store
(`known-connections`); one that disappears is retired at start-up. Retiring
must not lock every administrator out, so a change that leaves no enabled
connection able to sign in an admin is refused unless forced.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass, replace
from typing import Any

from authgate.audit import AuditLog
from authgate.policy import AccessRules
from authgate.scim.tokens import ScimTokens
from authgate.session.kv import KeyValueStore
from authgate.session.sessions import SessionStore
from authgate.settings import ConfigError, Settings
from authgate.users import User, UserStore

KNOWN = "known-connections"


class RetirementRefused(ConfigError):
    """Retiring would leave no way for an administrator to sign in."""


@dataclass(frozen=True)
class Lifecycle:
    """The stores and the audit log, bundled for the operations that end access."""

    users: UserStore
    sessions: SessionStore
    audit: AuditLog
    tokens: ScimTokens

    async def revoke_sessions(self, user: User, reason: str, **fields: Any) -> int:
        live = await self.sessions.revoke_user(user.id)
        self.audit.emit(
            "session.revoked",
            connection=user.connection,
            user_id=user.id,
            reason=reason,
            sessions=live,
            **fields,
        )
        return live

    async def deactivate(self, user: User, reason: str, **fields: Any) -> User:
        updated = await self.users.update(user, replace(user, active=False))
        await self.revoke_sessions(updated, reason, **fields)
        return updated

    async def delete(self, user: User, reason: str, **fields: Any) -> None:
        await self.users.delete(user)
        await self.revoke_sessions(user, reason, **fields)

    async def retire(self, user: User, reason: str, **fields: Any) -> User:
        retired = await self.users.retire(user)
        await self.revoke_sessions(retired, reason, **fields)
        self.audit.emit(
            "user.retired",
            connection=user.connection,
            user_id=user.id,
            email=user.email,
            reason=reason,
            **fields,
        )
        return retired

    async def retire_connection(self, connection: str, reason: str) -> int:
        """Retire every user of `connection` and revoke its SCIM tokens; returns the count."""
        count = 0
        for user in await self.users.list_users(connection):
            if not user.retired:
                await self.retire(user, reason)
                count += 1
        await self.tokens.revoke_connection(connection)
        self.audit.emit("connection.retired", connection=connection, users=count, reason=reason)
        return count


def file_rules(settings: Settings) -> list[AccessRules]:
    """The access rules of the enabled connections in the config file (for the CLI)."""
    return [AccessRules.build(c, settings.access) for c in settings.connections if c.enabled]


def _grants_admin(rules: AccessRules, role: str) -> bool:
    return rules.default_role == role or any(role in r for r in rules.role_map.values())


async def admin_connections(
    users: UserStore, role: str, rules: Iterable[AccessRules], excluding: Set[str] = frozenset()
) -> list[str]:
    """Connections (of `rules`) through which someone can still sign in with the admin role."""
    able = []
    for conn in rules:
        if conn.connection in excluding:
            continue
        if _grants_admin(conn, role) or any(
            u.active and role in u.roles for u in await users.list_users(conn.connection)
        ):
            able.append(conn.connection)
    return able


async def check_admin_safety(
    users: UserStore, role: str, rules: Iterable[AccessRules], retiring: Set[str], force: bool
) -> None:
    """Refuse to retire `retiring` if no admin could sign in afterwards, unless forced."""
    if force or await admin_connections(users, role, rules, retiring):
        return
    raise RetirementRefused(
        [
            f"retiring {', '.join(sorted(retiring))} would leave no enabled connection able to"
            f" sign in a user with the {role!r} role (map an IdP group to it in"
            " access.role_mappings, or pass --force to retire anyway)"
        ]
    )


async def check_user_retirement(
    users: UserStore, role: str, rules: Iterable[AccessRules], user: User
) -> None:
    """Refuse to retire the last user through whom anyone can sign in with the admin role."""
    if not user.active or role not in user.roles:
        return
    for conn in rules:
        if _grants_admin(conn, role):
            return
        others = await users.list_users(conn.connection)
        if any(u.active and role in u.roles and u.id != user.id for u in others):
            return
    raise RetirementRefused(
        [
            f"retiring {user.email or user.id} would leave no one able to sign in with the"
            f" {role!r} role: give another user that role, or map an IdP group to it in"
            " access.role_mappings, first"
        ]
    )


async def check_disabled(users: UserStore, settings: Settings, force: bool) -> None:
    """`enabled: false` passes the same guard as a removal: refused when it is what leaves
    no connection able to sign an admin in (the others could not before either: not then)."""
    disabled = {c.id for c in settings.connections if not c.enabled}
    if force or not disabled:
        return
    role = settings.admin.role
    everything = [AccessRules.build(c, settings.access) for c in settings.connections]
    if await admin_connections(users, role, file_rules(settings)):
        return
    if await admin_connections(users, role, everything):
        raise RetirementRefused(
            [
                f"disabling {', '.join(sorted(disabled))} would leave no enabled connection able"
                f" to sign in a user with the {role!r} role (map an IdP group to it on another"
                " connection first, or pass --force)"
            ]
        )


async def reconcile_connections(
    kv: KeyValueStore, lifecycle: Lifecycle, settings: Settings, force: bool = False
) -> list[str]:
    """Retire the connections that left the config since the last start; returns their ids."""
    current = {c.id for c in settings.connections}
    removed = sorted(await kv.members(KNOWN) - current)
    await check_disabled(lifecycle.users, settings, force)
    if removed:
        role, rules = settings.admin.role, file_rules(settings)
        await check_admin_safety(lifecycle.users, role, rules, set(removed), force)
        for conn_id in removed:
            await lifecycle.retire_connection(conn_id, "connection_removed")
            await kv.remove_member(KNOWN, conn_id)
    for conn_id in current:
        await kv.add_member(KNOWN, conn_id)
    return removed
