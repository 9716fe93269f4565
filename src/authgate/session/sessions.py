"""Sessions: 256-bit random ids in the cookie, everything else server-side.

The store key is a SHA-256 of the id, so a dump of Redis does not hand out
live cookies. A per-user index of those digests (never the ids themselves)
lets every session of a user be revoked at once (logout everywhere, SCIM
deactivation, retirement); per-subject and per-sign-in indexes, keyed by the
IdP's own names (SAML NameID, SessionIndex) and hashed, let an IdP's logout
end exactly the sessions it names, whichever user record they belong to.
Each index is one key of its own, so every store call stays single-key
(Redis Cluster). Every removal or change of a session is published by its
digest, so the processes that cache sessions (`session.cache`) drop their
copy at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from authgate.session.cache import INVALIDATIONS, SessionCache
from authgate.session.kv import KeyValueStore

SESSION_ID_BYTES = 32


@dataclass(frozen=True, slots=True)
class Session:
    """What a signed-in browser carries server-side; protocol-blind except `protocol_data`."""

    user_id: str
    connection: str
    subject: str
    username: str
    email: str | None
    name: str | None
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    created_at: float
    last_seen: float
    expires_at: float
    protocol_data: dict[str, Any] = field(default_factory=dict)
    organization: str | None = None
    # The IdP's id for the sign-in this session came from (SAML SessionIndex), if it gave one.
    idp_session: str | None = None
    # When the protocol wants the claims renewed (OIDC refresh); None: never.
    refresh_at: float | None = None
    id: str = ""

    def refresh_due(self, now: float) -> bool:
        """Until its renewal time a session is served like any other (by the fast path too)."""
        return self.refresh_at is not None and self.refresh_at <= now

    def to_json(self) -> bytes:
        data = asdict(self)
        data.pop("id")
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, sid: str, raw: bytes) -> Session:
        data = json.loads(raw)
        data["groups"] = tuple(data["groups"])
        data["roles"] = tuple(data["roles"])
        if "refresh_at" not in data:
            # Written before the field existed: the time was kept in protocol_data.
            data["refresh_at"] = data.get("protocol_data", {}).pop("refresh_at", None)
        return cls(id=sid, **data)


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def _key_of(digest: str) -> str:
    return "sess:" + digest


def _key(sid: str) -> str:
    return _key_of(_digest(sid))


def _user_index(user_id: str) -> str:
    return "user-sessions:" + user_id


def _scope(*parts: str) -> str:
    """Values the IdP chose (NameID, SessionIndex), hashed into a fixed-size key part."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _subject_index(connection: str, subject: str) -> str:
    """The sessions of one IdP subject (SAML NameID) at one connection."""
    return "subject-sessions:" + _scope(connection, subject)


def _idp_index(connection: str, subject: str, idp_session: str) -> str:
    """The sessions one IdP sign-in (SAML SessionIndex) of that subject began."""
    return "idp-sessions:" + _scope(connection, subject, idp_session)


# An OIDC logout token may name the provider's session (`sid`) without the subject.
ANY_SUBJECT = ""


def _indexes(session: Session) -> list[str]:
    """Every index that lists `session`."""
    found = [_user_index(session.user_id), _subject_index(session.connection, session.subject)]
    if session.idp_session:
        found.append(_idp_index(session.connection, session.subject, session.idp_session))
        found.append(_idp_index(session.connection, ANY_SUBJECT, session.idp_session))
    return found


class SessionStore:
    """Creates, loads, touches and revokes sessions with absolute and idle limits."""

    def __init__(
        self,
        kv: KeyValueStore,
        lifetime: float,
        idle_timeout: float,
        clock: Callable[[], float] = time.time,
        cache: SessionCache | None = None,
    ) -> None:
        self._kv = kv
        self.lifetime = lifetime
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._touch_every = min(60.0, idle_timeout / 10)
        self.cache = cache

    def _ttl(self, session: Session, now: float) -> float:
        return max(0.001, min(session.expires_at - now, self.idle_timeout))

    async def create(self, template: Session) -> Session:
        """Always mints a fresh id, so a login can never adopt a planted session."""
        now = self._clock()
        expires = now + self.lifetime
        if template.expires_at:
            expires = min(expires, template.expires_at)
        session = replace(
            template,
            id=secrets.token_urlsafe(SESSION_ID_BYTES),
            created_at=now,
            last_seen=now,
            expires_at=expires,
        )
        ttl = self._ttl(session, now)
        await self._kv.set(_key(session.id), session.to_json(), ttl)
        for index in _indexes(session):
            await self._kv.add_member(index, _digest(session.id), self.lifetime)
        return session

    def cached(self, sid: str) -> Session | None:
        """The session from this process's cache, while that may stand in for the store.

        Only until its next idle-timeout touch is due, so the store keeps
        seeing every session in use; the expiry checks are `load`'s.
        """
        if self.cache is None or not sid or len(sid) > 128:
            return None
        session = self.cache.get(_digest(sid))
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires_at or now - session.last_seen >= self._touch_every:
            return None
        return session

    async def load(self, sid: str) -> Session | None:
        """The session behind a cookie, or None if unknown, expired or idle too long."""
        if not sid or len(sid) > 128:
            return None
        epoch = self.cache.epoch if self.cache is not None else 0
        raw = await self._kv.get(_key(sid))
        if raw is None:
            return None
        session = Session.from_json(sid, raw)
        now = self._clock()
        if now >= session.expires_at or now - session.last_seen >= self.idle_timeout:
            # Every replica checks the deadlines of what it caches: nothing to wait for.
            await self._remove(session, revoked=False)
            return None
        current = session
        if now - session.last_seen >= self._touch_every:
            current = await self._touch(session, now)
        if current is not None and self.cache is not None:
            self.cache.offer(_digest(sid), current, epoch)
        return current

    async def _touch(self, session: Session, now: float) -> Session | None:
        """Extend the idle deadline without resurrecting a session revoked meanwhile."""
        touched = replace(session, last_seen=now)
        ttl = self._ttl(touched, now)
        if not await self._kv.set(_key(session.id), touched.to_json(), ttl, only_if_exists=True):
            return None
        return touched

    async def update(self, session: Session) -> Session | None:
        """Store renewed contents (claims refreshed at the IdP) under the same id and deadlines.

        Like a touch, it never resurrects a session that was revoked meanwhile.
        """
        now = self._clock()
        if now >= session.expires_at:
            return None
        ttl = self._ttl(session, now)
        if not await self._kv.set(_key(session.id), session.to_json(), ttl, only_if_exists=True):
            return None
        await self._invalidate(_digest(session.id))
        return session

    async def delete(self, session: Session) -> None:
        """Revoke one session; returns once no replica will serve it again."""
        await self._remove(session, revoked=True)

    async def _remove(self, session: Session, revoked: bool) -> None:
        digest = _digest(session.id)
        await self._kv.delete(_key_of(digest), durable=revoked)
        for index in _indexes(session):
            await self._kv.remove_member(index, digest)
        await self._invalidate(digest, revoked)

    async def _invalidate(self, digest: str, revoked: bool = False) -> None:
        """Every process (this one first) forgets its cached copy of the session.

        A revocation returns only once no replica can serve the session from
        memory any more (SPEC §7: once a logout has answered, nobody serves it).
        """
        if self.cache is not None:
            self.cache.drop(digest)
        await self._kv.publish(INVALIDATIONS, digest, confirm=revoked)

    async def revoke_user(self, user_id: str) -> int:
        """End every session of one user at once; returns how many were live.

        Only the index entries read here are removed, so a session created by a
        concurrent login stays indexed and can still be revoked later.
        """
        index = _user_index(user_id)
        live = 0
        digests = await self._kv.members(index)
        for digest in digests:
            live += await self._kv.delete(_key_of(digest), durable=True)
            await self._kv.remove_member(index, digest)
        await asyncio.gather(*(self._invalidate(d, revoked=True) for d in digests))
        return live

    async def revoke_idp_sessions(
        self, connection: str, subject: str, idp_sessions: Iterable[str]
    ) -> list[Session]:
        """End the sessions that the IdP sign-ins named by `idp_sessions` (the SessionIndex
        values of a SAML LogoutRequest for `subject`) began at `connection`; the live ones.

        One index read per value, no scan. The subject is part of the key, as
        a SessionIndex counts only with its NameID: other people's sessions,
        other connections and the subject's other sign-ins are never touched.
        """
        found: dict[str, str] = {}
        for value in dict.fromkeys(idp_sessions):
            index = _idp_index(connection, subject, value)
            found.update(dict.fromkeys(await self._kv.members(index), index))
        return await self._revoke(found)

    async def revoke_subject(self, connection: str, subject: str) -> list[Session]:
        """End every session signed in through `connection` as `subject` (a LogoutRequest that
        names no SessionIndex); the person's sessions through other connections stay."""
        index = _subject_index(connection, subject)
        return await self._revoke(dict.fromkeys(await self._kv.members(index), index))

    async def _revoke(self, found: dict[str, str]) -> list[Session]:
        """Delete each session (digest -> the index it was found in) with every index entry it
        has, read from the session itself so the user index stays exact; answer once no
        replica serves any of them. Returns the sessions that were live."""
        ended: list[Session] = []
        for digest, index in found.items():
            raw = await self._kv.get(_key_of(digest))
            session = Session.from_json("", raw) if raw is not None else None
            if await self._kv.delete(_key_of(digest), durable=True) and session is not None:
                ended.append(session)
            for entry in _indexes(session) if session is not None else [index]:
                await self._kv.remove_member(entry, digest)
        await asyncio.gather(*(self._invalidate(d, revoked=True) for d in found))
        return ended

    async def restamp_user(
        self, user_id: str, change: Callable[[Session], Awaitable[Session]]
    ) -> int:
        """Apply `change` to every live session of one user, in place; how many changed.

        The index holds digests, never ids, so each session is rewritten under its
        digest with compare-and-set (a concurrent touch or logout wins, and is not
        undone). Like a revocation, it answers once no replica serves the old copy:
        a role taken away must be gone on the next request everywhere.
        """
        changed = 0
        for digest in await self._kv.members(_user_index(user_id)):
            raw = await self._kv.get(_key_of(digest))
            if raw is None:
                continue
            session = Session.from_json("", raw)
            updated = await change(session)
            if updated != session and await self._kv.replace(
                _key_of(digest), raw, updated.to_json()
            ):
                await self._invalidate(digest, revoked=True)
                changed += 1
        return changed

    async def count_for_user(self, user_id: str) -> int:
        """Live sessions of one user; entries of sessions that expired are pruned."""
        index = _user_index(user_id)
        count = 0
        for digest in await self._kv.members(index):
            if await self._kv.get(_key_of(digest)) is None:
                await self._kv.remove_member(index, digest)
            else:
                count += 1
        return count
