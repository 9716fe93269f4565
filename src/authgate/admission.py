"""Whether a proven identity may come in, and as what: one step for every caller.

A sign-in, an admin's test sign-in and a session refresh must reach the
same verdict for the same person, so all three run the rules here in one
order: the IdP's session limit, the connection's identity rules (verified
email, domains), the directory allowlist, the user record (provisioned,
active, email not taken), then the groups and roles. The verdict is data —
admitted as a user with groups and roles, or refused with the reason — so a
test sign-in shows it without raising; only `sign_in` writes anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from authgate.connections import Connection
from authgate.directory_sync import check_member
from authgate.errors import LoginFailed, PolicyDenied, ProtocolError
from authgate.identity import Identity
from authgate.policy import AccessRules, check_identity, roles_for
from authgate.session.kv import KeyValueStore
from authgate.settings import DirectorySyncSettings
from authgate.users import User, UserStore


@dataclass(frozen=True, slots=True)
class Verdict:
    """`refusal` is None when admitted; `user` is None only for a preview of a new user."""

    user: User | None
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    refusal: LoginFailed | None = None

    @classmethod
    def refused(cls, refusal: LoginFailed) -> Verdict:
        return cls(None, (), (), refusal)


async def grants(
    users: UserStore, rules: AccessRules, user: User | None, idp_groups: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A session's groups (the IdP's and the provisioned ones) and the roles they map to,
    plus the user's own; the same at sign-in, at refresh and when an admin changes roles."""
    provisioned = await users.groups_of(user.id) if user else []
    groups = tuple(dict.fromkeys(idp_groups + tuple(g.display_name for g in provisioned)))
    group_keys = groups + tuple(g.external_id for g in provisioned if g.external_id)
    return groups, roles_for(group_keys, rules, user.roles if user else ())


class Admission:
    def __init__(
        self,
        users: UserStore,
        kv: KeyValueStore,
        directory: Sequence[DirectorySyncSettings],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._users = users
        self._kv = kv
        self._directory = directory
        self._clock = clock

    async def _rules(self, conn: Connection, identity: Identity) -> None:
        limit = identity.session_not_after
        if limit is not None and limit <= self._clock():
            raise ProtocolError("expired", "the IdP's session limit has already passed")
        check_identity(identity, conn.rules)
        await check_member(self._kv, self._directory, identity)

    async def _verdict(self, conn: Connection, identity: Identity, user: User | None) -> Verdict:
        groups, roles = await grants(self._users, conn.rules, user, identity.groups)
        return Verdict(user, groups, roles)

    async def sign_in(self, conn: Connection, identity: Identity) -> Verdict:
        """The user is found, linked or made and the login recorded on it."""
        settings = conn.settings
        try:
            await self._rules(conn, identity)
            user = await self._users.admit(identity, settings.provisioning, settings.organization)
        except LoginFailed as exc:
            return Verdict.refused(exc)
        return await self._verdict(conn, identity, user)

    async def preview(self, conn: Connection, identity: Identity) -> Verdict:
        """What `sign_in` would decide, without writing: the admin's test sign-in."""
        try:
            await self._rules(conn, identity)
            user = await self._users.match(identity, conn.settings.provisioning)
        except LoginFailed as exc:
            return Verdict.refused(exc)
        return await self._verdict(conn, identity, user)

    async def renew(self, conn: Connection, identity: Identity, user_id: str) -> Verdict:
        """A refreshed identity keeps its session only if it would still be let in, as the
        session's own user (deleted or deactivated since means out)."""
        try:
            await self._rules(conn, identity)
            user = await self._users.get(user_id)
            if user is None or not user.active:
                raise PolicyDenied("user_disabled", f"user {user_id} is deleted or deactivated")
        except LoginFailed as exc:
            return Verdict.refused(exc)
        return await self._verdict(conn, identity, user)
