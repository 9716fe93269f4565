"""User records: JIT creation, pre-provisioned linking, uniqueness of email, retirement.

Keys (all single-key operations, Cluster-safe):
  user:{id}                 the record as JSON
  user-email:{email}        lower-cased email -> id, claimed with SET NX (uniqueness)
  user-link:{conn}:{sub}    the IdP subject (or pre-provisioned ExternalId) -> id
  user-name:{conn}:{name}   lower-cased SCIM userName -> id (uniqueness per connection)
  users                     set of all ids
  conn-users:{conn}         ids of one connection's users (listing, retirement)
  group:{id}                a provisioned (SCIM) group as JSON
  conn-groups:{conn}        ids of one connection's groups
  group-members:{id}        user ids in a group; user-groups:{uid} is the reverse index
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from authgate.errors import PolicyDenied, StoreUnavailable
from authgate.identity import Identity
from authgate.session.kv import KeyValueStore

Provisioning = Literal["jit", "preprovisioned"]


@dataclass(frozen=True, slots=True)
class User:
    id: str
    connection: str
    external_id: str
    email: str | None
    display_name: str | None = None
    roles: tuple[str, ...] = ()
    active: bool = True
    source: str = "jit"
    linked: bool = False
    created_at: float = field(default_factory=time.time)
    last_login_at: float | None = None
    username: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    updated_at: float | None = None
    retired: bool = False
    organization: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> User:
        data = json.loads(raw)
        data["roles"] = tuple(data["roles"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Group:
    """A group pushed by SCIM; its display name and external id feed the role mapping."""

    id: str
    connection: str
    display_name: str
    external_id: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    member_display: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Group:
        return cls(**json.loads(raw))


def _email_key(email: str) -> str:
    return "user-email:" + email.strip().lower()


def _link_key(connection: str, subject: str) -> str:
    return f"user-link:{connection}:{subject}"


def _name_key(connection: str, username: str) -> str:
    return f"user-name:{connection}:{username.strip().lower()}"


def _unique_keys(user: User) -> dict[str, str]:
    """The keys a user claims exclusively, by kind."""
    keys = {"link": _link_key(user.connection, user.external_id)}
    if user.email:
        keys["email"] = _email_key(user.email)
    if user.username:
        keys["userName"] = _name_key(user.connection, user.username)
    return keys


class UserStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    async def get(self, user_id: str) -> User | None:
        raw = await self._kv.get("user:" + user_id)
        return User.from_json(raw) if raw else None

    async def by_link(self, connection: str, subject: str) -> User | None:
        user_id = await self._kv.get(_link_key(connection, subject))
        return await self.get(user_id.decode()) if user_id else None

    async def by_email(self, email: str) -> User | None:
        user_id = await self._kv.get(_email_key(email))
        return await self.get(user_id.decode()) if user_id else None

    async def by_username(self, connection: str, username: str) -> User | None:
        user_id = await self._kv.get(_name_key(connection, username))
        return await self.get(user_id.decode()) if user_id else None

    async def all_ids(self) -> set[str]:
        return await self._kv.members("users")

    async def list_users(self, connection: str | None = None) -> list[User]:
        """Users in a stable order (creation, then id), so paging never skips or repeats."""
        ids = await self._kv.members("conn-users:" + connection if connection else "users")
        found = [u for u in [await self.get(i) for i in ids] if u is not None]
        return sorted(found, key=lambda u: (u.created_at, u.id))

    async def save(self, user: User) -> None:
        await self._kv.set("user:" + user.id, user.to_json())

    async def create(
        self,
        connection: str,
        external_id: str,
        email: str | None,
        display_name: str | None = None,
        roles: tuple[str, ...] = (),
        source: str = "jit",
        username: str | None = None,
        attributes: dict[str, Any] | None = None,
        active: bool = True,
    ) -> User:
        """Create a user, claiming its link, email and userName first so duplicates are refused.

        Without a SCIM userName the email (else the external id) stands in, so a SCIM
        client looking a JIT or CSV user up by userName finds it instead of duplicating it.
        """
        user = User(
            id=secrets.token_hex(12),
            connection=connection,
            external_id=external_id,
            email=email,
            display_name=display_name,
            roles=roles,
            source=source,
            username=username or email or external_id,
            attributes=attributes or {},
            active=active,
        )
        await self._claim_all(user, _unique_keys(user))
        await self.save(user)
        await self._kv.add_member("users", user.id)
        await self._kv.add_member("conn-users:" + connection, user.id)
        return user

    async def _claim(self, key: str, user_id: str) -> bool:
        """Take a uniqueness key for `user_id`; True also when it already holds it."""
        if await self._kv.set(key, user_id.encode(), only_if_new=True):
            return True
        owner = await self._kv.get(key)
        return owner is not None and owner.decode() == user_id

    async def _claim_all(self, user: User, keys: dict[str, str]) -> None:
        """Claim every key or none: a refused one releases those taken before it."""
        taken: list[str] = []
        for kind, key in keys.items():
            if not await self._claim(key, user.id):
                await self._release(user.id, *taken)
                raise PolicyDenied(
                    "email_conflict", f"{kind} {key.split(':', 1)[1]!r} belongs to another user"
                )
            taken.append(key)

    async def _release(self, user_id: str, *keys: str) -> None:
        for key in keys:
            owner = await self._kv.get(key)
            if owner is not None and owner.decode() == user_id:
                await self._kv.delete(key)

    async def update(self, current: User, wanted: User) -> User:
        """Save `wanted` over `current`, moving the unique keys that changed (none if refused)."""
        old, new = _unique_keys(current), _unique_keys(wanted)
        await self._claim_all(wanted, {k: v for k, v in new.items() if old.get(k) != v})
        wanted = replace(wanted, updated_at=time.time())
        await self.save(wanted)
        await self._release(current.id, *(v for k, v in old.items() if new.get(k) != v))
        return wanted

    async def retire(self, user: User) -> User:
        """Deactivate for good: refused at login (`user_disabled`), kept for the audit trail."""
        return await self.update(user, replace(user, active=False, retired=True))

    async def delete(self, user: User) -> None:
        """Remove the record, its unique keys and its group memberships."""
        for group_id in await self._kv.members("user-groups:" + user.id):
            await self._kv.remove_member("group-members:" + group_id, user.id)
        await self._kv.delete("user-groups:" + user.id, "user:" + user.id)
        await self._release(user.id, *_unique_keys(user).values())
        await self._kv.remove_member("users", user.id)
        await self._kv.remove_member("conn-users:" + user.connection, user.id)

    async def create_group(
        self, connection: str, display_name: str, external_id: str | None = None
    ) -> Group:
        group = Group(secrets.token_hex(12), connection, display_name, external_id)
        await self.save_group(group)
        await self._kv.add_member("conn-groups:" + connection, group.id)
        return group

    async def get_group(self, group_id: str) -> Group | None:
        raw = await self._kv.get("group:" + group_id)
        return Group.from_json(raw) if raw else None

    async def save_group(self, group: Group) -> None:
        await self._kv.set("group:" + group.id, group.to_json())

    async def list_groups(self, connection: str) -> list[Group]:
        ids = await self._kv.members("conn-groups:" + connection)
        found = [g for g in [await self.get_group(i) for i in ids] if g is not None]
        return sorted(found, key=lambda g: (g.created_at, g.id))

    async def delete_group(self, group: Group) -> None:
        await self.remove_members(group.id, await self.members(group.id))
        await self._kv.delete("group:" + group.id)
        await self._kv.remove_member("conn-groups:" + group.connection, group.id)

    async def members(self, group_id: str) -> set[str]:
        return await self._kv.members("group-members:" + group_id)

    async def add_members(self, group_id: str, user_ids: set[str]) -> None:
        for user_id in user_ids:
            await self._kv.add_member("group-members:" + group_id, user_id)
            await self._kv.add_member("user-groups:" + user_id, group_id)

    async def remove_members(self, group_id: str, user_ids: set[str]) -> None:
        for user_id in user_ids:
            await self._kv.remove_member("group-members:" + group_id, user_id)
            await self._kv.remove_member("user-groups:" + user_id, group_id)

    async def groups_of(self, user_id: str) -> list[Group]:
        ids = await self._kv.members("user-groups:" + user_id)
        found = [g for g in [await self.get_group(i) for i in ids] if g is not None]
        return sorted(found, key=lambda g: g.display_name)

    async def set_active(self, user: User, active: bool) -> User:
        updated = replace(user, active=active)
        await self.save(updated)
        return updated

    async def admit(
        self, identity: Identity, provisioning: Provisioning, organization: str | None = None
    ) -> User:
        """The user record a login maps to, creating or linking it as the mode allows;
        it is stamped with the connection's `organization`."""
        user = await self.match(identity, provisioning)
        if user is None:
            assert identity.email is not None
            user = await self.create(
                identity.connection, identity.link_value, identity.email, identity.name
            )
        return await self._record_login(user.id, identity, organization)

    async def match(self, identity: Identity, provisioning: Provisioning) -> User | None:
        """The existing user a login maps to, or None when one may be made; refuses as a
        sign-in would, without writing, so a test sign-in can tell the same verdict."""
        value = identity.link_value
        user = await self.by_link(identity.connection, value)
        if user is None:
            user = await self._provisioned_match(identity.connection, value)
        if user is None:
            if provisioning == "preprovisioned":
                raise PolicyDenied(
                    "user_not_provisioned",
                    f"no provisioned user for {identity.connection}:{value}",
                )
            if not identity.email:
                raise PolicyDenied("email_unverified", "a new user needs an email address")
            return None
        if not user.active:
            raise PolicyDenied("user_disabled", f"user {user.id} is deactivated")
        if identity.email and (user.email or "").lower() != identity.email.lower():
            owner = await self.by_email(identity.email)
            if owner is not None and owner.id != user.id:
                raise PolicyDenied("email_conflict", f"{identity.email} belongs to another user")
        return user

    async def _provisioned_match(self, connection: str, value: str) -> User | None:
        """A user this connection provisioned (SCIM, CSV) whose userName or email is `value`.

        Entra's default SCIM mapping puts mailNickname in externalId while its
        sign-ins name the person by UPN or mail, which SCIM sent as userName and
        email. The same IdP vouches for both sides, so they are the same person;
        a user of another connection, or one made at sign-in, never matches.
        """
        for user in (await self.by_username(connection, value), await self.by_email(value)):
            if user is not None and user.connection == connection and user.source != "jit":
                return user
        return None

    async def _record_login(
        self, user_id: str, identity: Identity, organization: str | None
    ) -> User:
        """Mark the login with compare-and-set, so a concurrent retire is never undone."""
        for _ in range(8):
            raw = await self._kv.get("user:" + user_id)
            if raw is None:
                raise PolicyDenied("user_disabled", f"user {user_id} was deleted")
            user = User.from_json(raw)
            if not user.active:
                raise PolicyDenied("user_disabled", f"user {user.id} is deactivated")
            if identity.email and (user.email or "").lower() != identity.email.lower():
                user = await self._change_email(user, identity.email)
            user = replace(
                user,
                linked=True,
                last_login_at=time.time(),
                display_name=identity.name or user.display_name,
                organization=organization,
            )
            if await self._kv.replace("user:" + user_id, raw, user.to_json()):
                return user
        raise StoreUnavailable(detail=f"user {user_id} kept changing during sign-in")

    async def _change_email(self, user: User, email: str) -> User:
        """Follow an email change at the IdP, unless another user owns the new address."""
        if not await self._kv.set(_email_key(email), user.id.encode(), only_if_new=True):
            owner = await self._kv.get(_email_key(email))
            if owner is None or owner.decode() != user.id:
                raise PolicyDenied("email_conflict", f"{email} belongs to another user")
        if user.email:
            await self._kv.delete(_email_key(user.email))
        return replace(user, email=email)
