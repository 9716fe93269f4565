"""The "refresh if due" step of the request path: renew a session's claims at the IdP.

Only sessions whose `refresh_at` is in the past get here.
One request per session does the work, under a short lock in the shared
store (`SET NX`), so concurrent requests — on any replica — never race a
rotating refresh token; the others go on with the session as it is. A
refused refresh (revoked grant, other issuer or subject, policy no longer
met) ends the session; a provider that cannot be reached only postpones it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import web

from authgate.connections import Connection
from authgate.errors import LoginFailed
from authgate.protocols.base import RefreshDeferred
from authgate.protocols.oidc import REFRESH_RETRY
from authgate.session.kv import KeyValueStore
from authgate.session.sessions import Session
from authgate.web.client_info import CID, CLIENT
from authgate.web.state import State, state

log = logging.getLogger("authgate.oidc")
LOCK_TTL = 30.0


async def refresh_if_due(request: web.Request, session: Session) -> Session | None:
    """The session, renewed if its refresh was due; None once the refresh ended it."""
    st = state(request)
    conn = st.connections.get(session.connection)
    if conn is None or conn.engine is None or not session.refresh_due(time.time()):
        return session
    lock = "refresh-lock:" + hashlib.sha256(session.id.encode()).hexdigest()
    async with refresh_lock(st.kv, lock) as held:
        if not held:
            return session
        current = await st.sessions.load(session.id)
        if current is None or not current.refresh_due(time.time()):
            return current
        return await _renew(request, st, conn, current)


@contextlib.asynccontextmanager
async def refresh_lock(kv: KeyValueStore, key: str) -> AsyncIterator[bool]:
    """Whether this request holds the lock; released only if it is still this request's.

    A holder slower than LOCK_TTL (a stalled provider, a paused replica) finds
    the lock taken by another replica when it finishes, and leaves it alone.
    """
    token = secrets.token_hex(16).encode()
    if not await kv.set(key, token, ttl=LOCK_TTL, only_if_new=True):
        yield False
        return
    try:
        yield True
    finally:
        await kv.delete_if(key, token)


async def _renew(
    request: web.Request, st: State, conn: Connection, session: Session
) -> Session | None:
    try:
        assert conn.engine is not None
        result = await conn.engine.refresh(session.protocol_data)
    except RefreshDeferred as exc:
        log.warning("refresh of a %s session postponed: %s", session.connection, exc)
        later = time.time() + REFRESH_RETRY
        return await st.sessions.update(replace(session, refresh_at=later))
    except LoginFailed as exc:
        await _end(request, st, session, exc)
        return None
    identity = result.identity
    if identity is None:
        kept = replace(session, protocol_data=result.protocol_data, refresh_at=result.refresh_at)
        return await st.sessions.update(kept)
    verdict = await st.admission.renew(conn, identity, session.user_id)
    if verdict.refusal is not None:
        await _end(request, st, session, verdict.refusal)
        return None
    renewed = replace(
        session,
        email=identity.email,
        name=identity.name,
        username=identity.username or identity.email or identity.subject,
        groups=verdict.groups,
        roles=verdict.roles,
        protocol_data=result.protocol_data,
        refresh_at=result.refresh_at,
    )
    st.audit.emit(
        "session.refreshed",
        connection=session.connection,
        user_id=session.user_id,
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )
    return await st.sessions.update(renewed)


async def _end(request: web.Request, st: State, session: Session, exc: LoginFailed) -> None:
    await st.sessions.delete(session)
    st.audit.emit(
        "session.revoked",
        connection=session.connection,
        user_id=session.user_id,
        reason=exc.reason,
        detail=exc.detail,
        ip=request[CLIENT].ip,
        correlation_id=request[CID],
    )
    st.metrics.logins.labels(session.connection, "refresh_failure", exc.reason).inc()
    await st.status.failure(session.connection, exc.reason, request[CID])
