"""User records: JIT creation, pre-provisioned linking, uniqueness of email, retirement.

Keys (all single-key operations, Cluster-safe):
  user:{id}                 the record as JSON
  user-email:{email}        lower-cased email -> id, claimed with SET NX (uniqueness)
  user-link:{conn}:{sub}    the IdP subject (or pre-provisioned ExternalId) -> id
  users                     set of all ids
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from authgate.errors import PolicyDenied
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

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> User:
        data = json.loads(raw)
        data["roles"] = tuple(data["roles"])
        return cls(**data)


def _email_key(email: str) -> str:
    return "user-email:" + email.strip().lower()


def _link_key(connection: str, subject: str) -> str:
    return f"user-link:{connection}:{subject}"


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

    async def all_ids(self) -> set[str]:
        return await self._kv.members("users")

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
    ) -> User:
        """Create a user, claiming its email and link first so duplicates are refused."""
        user = User(
            id=secrets.token_hex(12),
            connection=connection,
            external_id=external_id,
            email=email,
            display_name=display_name,
            roles=roles,
            source=source,
        )
        if not await self._kv.set(
            _link_key(connection, external_id), user.id.encode(), only_if_new=True
        ):
            raise PolicyDenied("email_conflict", f"{connection}:{external_id} already exists")
        if email and not await self._kv.set(_email_key(email), user.id.encode(), only_if_new=True):
            await self._kv.delete(_link_key(connection, external_id))
            raise PolicyDenied("email_conflict", f"{email} belongs to another user")
        await self.save(user)
        await self._kv.add_member("users", user.id)
        return user

    async def set_active(self, user: User, active: bool) -> User:
        updated = replace(user, active=active)
        await self.save(updated)
        return updated

    async def admit(self, identity: Identity, provisioning: Provisioning) -> User:
        """The user record a login maps to, creating or linking it as the mode allows."""
        user = await self.by_link(identity.connection, identity.subject)
        if user is None:
            if provisioning == "preprovisioned":
                raise PolicyDenied(
                    "user_not_provisioned",
                    f"no provisioned user for {identity.connection}:{identity.subject}",
                )
            if not identity.email:
                raise PolicyDenied("email_unverified", "a new user needs an email address")
            user = await self.create(
                identity.connection, identity.subject, identity.email, identity.name
            )
        if not user.active:
            raise PolicyDenied("user_disabled", f"user {user.id} is deactivated")
        if identity.email and (user.email or "").lower() != identity.email.lower():
            user = await self._change_email(user, identity.email)
        user = replace(
            user,
            linked=True,
            last_login_at=time.time(),
            display_name=identity.name or user.display_name,
        )
        await self.save(user)
        return user

    async def _change_email(self, user: User, email: str) -> User:
        """Follow an email change at the IdP, unless another user owns the new address."""
        if not await self._kv.set(_email_key(email), user.id.encode(), only_if_new=True):
            owner = await self._kv.get(_email_key(email))
            if owner is None or owner.decode() != user.id:
                raise PolicyDenied("email_conflict", f"{email} belongs to another user")
        if user.email:
            await self._kv.delete(_email_key(user.email))
        return replace(user, email=email)
