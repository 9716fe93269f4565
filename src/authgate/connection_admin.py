"""What an admin can do to connections, for the JSON API and the admin pages alike.

A change is written to the store as a new version (compare-and-set, so a
second admin editing the same version is told, not overwritten), put in force
on this replica at once and announced to the others (`connection_sync`).
Config-file connections are listed but read-only. Everything that ends
access (deactivate, delete, a role mapping change) passes the lock-out guard
first, and every change is an `admin.connection.*` audit event with a diff
that shows whether a secret changed, never the secret. Each operation either
returns what it did or raises `Refusal` with the status, reason code, field
and a sentence saying what to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from cryptography import x509
from pydantic import ValidationError

from authgate.bodies import read_capped
from authgate.connection_requests import (
    RequestRefused,
    changed_document,
    check_metadata,
    diff,
    new_document,
    new_key_pair,
    settings_problem,
)
from authgate.connection_store import ConnectionDocument, ConnectionStore, VersionConflict
from authgate.connections import Connection
from authgate.errors import AuthgateError
from authgate.policy import AccessRules
from authgate.protocols.saml_config import SpEndpoints
from authgate.provisioning import lifecycle_of
from authgate.public_addresses import url_problem
from authgate.public_fetch import public_session
from authgate.retirement import RetirementRefused, admin_connections, check_admin_safety
from authgate.settings import SamlConnection, own_paths
from authgate.web.signin import restamp
from authgate.web.state import State

Audit = Callable[..., None]
METADATA_FETCH_TIMEOUT = 10.0
MAX_FETCHED_METADATA = 1024 * 1024
UNREACHABLE = "could not be fetched: check the URL and that authgate can reach it"
NO_MASTER_KEY = (
    "authgate has no master key, so it cannot store this connection's secrets:"
    " run `authgate secrets keygen` and give the key to every replica in"
    " AUTHGATE_MASTER_KEY (or secrets.master_key_file), then try again"
)
# A refusal's status follows from its reason: a clash with what exists, or a body too large.
STATUS = {
    "connection_exists": 409,
    "domain_claimed": 409,
    "path_claimed": 409,
    "body_too_large": 413,
}
MAX_SP_KEYS = 2
ROLLOVER_BUSY = "a rollover is under way: promote the new certificate or retire the old first"
# The setting behind each endpoint a connection may move.
PATH_FIELDS = {
    "acs": "acs_urls",
    "slo": "slo_path",
    "metadata": "metadata_path",
    "callback": "redirect_path",
}


class Refusal(Exception):
    def __init__(self, status: int, error: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field

    @classmethod
    def of(cls, exc: RequestRefused) -> Refusal:
        message = f"{exc.field}: {exc.message}"
        return cls(STATUS.get(exc.error, 400), exc.error, message, exc.field)


def _exists(conn_id: str) -> RequestRefused:
    message = f"connection {conn_id} exists already: choose another id"
    return RequestRefused("id", message, "connection_exists")


def _last_admin(exc: RetirementRefused) -> Refusal:
    return Refusal(409, "last_admin", exc.problems[0])


def sp_values(st: State, conn: Connection) -> dict[str, str]:
    """What the admin copies into the IdP's app registration."""
    if isinstance(conn.settings, SamlConnection):
        sp = SpEndpoints.build(conn.settings, st.settings)
        return {
            "entity_id": sp.entity_id,
            "acs_url": sp.acs_url,
            "slo_url": sp.slo_url,
            "metadata_url": sp.metadata_url,
        }
    return {"redirect_uri": st.settings.public_url + st.url(f"/oidc/{conn.id}/callback")}


async def describe(st: State, conn: Connection) -> dict[str, Any]:
    users = await st.users.list_users(conn.id)
    sessions = sum([await st.sessions.count_for_user(u.id) for u in users])
    return {
        "id": conn.id,
        "type": conn.type,
        "name": conn.name,
        "version": conn.version,
        "active": conn.active,
        "managed_by": "config file" if conn.source == "file" else "admin",
        "sp": sp_values(st, conn),
        "users": sum(1 for u in users if u.active),
        "sessions": sessions,
        **({"sp_certificates": sp_certificates(conn.settings)} if conn.type == "saml" else {}),
    }


def sp_certificates(settings: Any) -> list[dict[str, Any]]:
    """The SP's published certificates, the signing one first, with their dates."""
    out = []
    for number, pair in enumerate(settings.sp_keys):
        cert = x509.load_pem_x509_certificate(pair.cert_file.read_bytes())
        out.append(
            {
                "subject": cert.subject.rfc4514_string(),
                "not_before": cert.not_valid_before_utc.date().isoformat(),
                "not_after": cert.not_valid_after_utc.date().isoformat(),
                "signing": number == 0,
            }
        )
    return out


def _metadata_client(public_only: bool) -> aiohttp.ClientSession:
    if public_only:
        return public_session(METADATA_FETCH_TIMEOUT)
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=METADATA_FETCH_TIMEOUT))


async def _fetch_metadata(url: str, public_only: bool) -> None:
    """An IdP metadata URL must answer usable metadata now, or the request is refused.

    An outsider's URL (`public_only`) gets one answer: a redirect is refused
    like any other status, and an address that is not public reads as
    unreachable, so the answer never tells what lives inside the network.
    """
    if public_only and (problem := url_problem(url)):
        raise RequestRefused("idp_metadata_url", problem)
    try:
        async with (
            _metadata_client(public_only) as http,
            http.get(url, allow_redirects=not public_only) as resp,
        ):
            if resp.status != 200:
                raise RequestRefused("idp_metadata_url", f"the server answered HTTP {resp.status}")
            raw = await read_capped(resp.content, MAX_FETCHED_METADATA)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise RequestRefused("idp_metadata_url", UNREACHABLE) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestRefused("idp_metadata_url", "did not answer a UTF-8 XML document") from None
    check_metadata(text)


def _claimed_domains(st: State, doc: ConnectionDocument) -> None:
    """A sign-in domain routes to one connection only."""
    wanted = {d.lower().lstrip("@") for d in doc.settings.get("domains") or []}
    for other in st.connections:
        taken = wanted & set(other.settings.domains)
        if other.id != doc.id and taken:
            message = f"{', '.join(sorted(taken))} is already routed to connection {other.id}"
            raise RequestRefused("domains", message, "domain_claimed")


async def _validated(st: State, doc: ConnectionDocument) -> Connection:
    _claimed_domains(st, doc)
    if isinstance(url := doc.settings.get("idp_metadata_url"), str):
        await _fetch_metadata(url, doc.settings.get("idp_metadata_public_only") is True)
    try:
        conn = st.connection_sync.describe(doc)
    except ValidationError as exc:
        raise settings_problem(exc) from None
    for path, endpoint in own_paths(conn.settings).items():
        other = st.connections.taken(path, doc.id)
        prefix = st.settings.prefix
        if other is not None or path == prefix or path.startswith(prefix + "/auth"):
            message = f"{path} is already answered by {other or 'authgate itself'}"
            raise RequestRefused(PATH_FIELDS[endpoint], message, "path_claimed")
    return conn


def found(st: State, conn_id: str) -> Connection:
    conn = st.connections.get(conn_id)
    if conn is None:
        raise Refusal(404, "unknown_connection", "no such connection")
    return conn


async def _stored(st: State, conn_id: str) -> tuple[ConnectionDocument, bytes]:
    """The store document of an admin-made connection, with its compare-and-set token."""
    conn = st.connections.get(conn_id)
    if conn is not None and conn.source == "file":
        message = f"connection {conn_id} is managed by the config file: change it there"
        raise Refusal(409, "managed_by_config", message)
    stored = await ConnectionStore(st.kv).read(conn_id)
    if stored is None:
        raise Refusal(404, "unknown_connection", "no such connection")
    return stored


def _conflict(doc: ConnectionDocument) -> Refusal:
    message = (
        f"connection {doc.id} was changed by someone else: reload it and make your change again"
    )
    return Refusal(409, "version_conflict", message)


async def _guard(st: State, rules: list[AccessRules], leaving: str) -> None:
    """Refuse a change after which no active connection could sign an admin in."""
    try:
        await check_admin_safety(st.users, st.settings.admin.role, rules, {leaving}, False)
    except RetirementRefused as exc:
        raise _last_admin(exc) from None


def _others(st: State, conn_id: str) -> list[AccessRules]:
    return [c.rules for c in st.connections.active() if c.id != conn_id]


def _scoped(body: dict[str, Any], organization: str | None) -> dict[str, Any]:
    """An organization admin's connections belong to that organization, and stay there."""
    if organization is None:
        return body
    if body.get("organization", organization) != organization:
        message = f"organization: you administer {organization} only"
        raise Refusal(403, "forbidden", message, "organization")
    return {**body, "organization": organization}


async def create(
    st: State, audit: Audit, actor: str, body: dict[str, Any], organization: str | None = None
) -> Connection:
    """`organization`: the creating admin's, when that admin manages one organization only."""
    if not st.box.available():
        raise Refusal(400, "no_master_key", NO_MASTER_KEY)
    body = _scoped(body, organization)
    try:
        # An RSA key is generated here: off the event loop, which keeps serving requests.
        doc = await asyncio.to_thread(new_document, body, st.box, actor)
        if doc.id in st.connections:
            raise _exists(doc.id)
        await _validated(st, doc)
        if not await ConnectionStore(st.kv).create(doc):
            raise _exists(doc.id)
    except RequestRefused as exc:
        raise Refusal.of(exc) from None
    await st.connection_sync.announce(doc.id)
    audit("admin.connection.created", connection=doc.id, changes=diff(None, doc))
    return found(st, doc.id)


async def _save(
    st: State, audit: Audit, old: ConnectionDocument, raw: bytes, new: ConnectionDocument,
    event: str,
) -> Connection:  # fmt: skip
    try:
        await ConnectionStore(st.kv).replace(raw, new)
    except VersionConflict:
        raise _conflict(old) from None
    await st.connection_sync.announce(new.id)
    audit(event, connection=new.id, version=new.version, changes=diff(old, new))
    conn = found(st, new.id)
    if conn.version != new.version:
        message = "the change was stored but could not be put in force; see the log"
        raise Refusal(500, "not_in_force", message)
    return conn


async def update(
    st: State,
    audit: Audit,
    actor: str,
    conn_id: str,
    body: dict[str, Any],
    organization: str | None = None,
) -> Connection:
    old, raw = await _stored(st, conn_id)
    if organization is not None and "organization" in body:
        body = _scoped(body, organization)
    if body.get("version") != old.version:
        raise _conflict(old)
    try:
        new = changed_document(old, body, st.box, actor)
        conn = await _validated(st, new)
    except RequestRefused as exc:
        raise Refusal.of(exc) from None
    if new.active and _roles(new) != _roles(old):
        rules = [*_others(st, conn_id), conn.rules]
        if not await admin_connections(st.users, st.settings.admin.role, rules):
            role = st.settings.admin.role
            message = f"this mapping leaves no one able to sign in with the {role!r} role"
            raise Refusal(409, "last_admin", message)
    saved = await _save(st, audit, old, raw, new, "admin.connection.updated")
    if _roles(new) != _roles(old):
        for user in await st.users.list_users(conn_id):
            await restamp(st, user, saved.rules)
    return saved


def _roles(doc: ConnectionDocument) -> tuple[Any, Any]:
    return doc.settings.get("default_role"), doc.settings.get("role_mappings")


async def activate(st: State, audit: Audit, actor: str, conn_id: str) -> Connection:
    old, raw = await _stored(st, conn_id)
    if old.active:
        return found(st, conn_id)
    new = old.next(actor, active=True)
    return await _save(st, audit, old, raw, new, "admin.connection.activated")


async def deactivate(st: State, audit: Audit, actor: str, conn_id: str) -> Connection:
    """No one signs in through it any more, and the sessions it made end now."""
    old, raw = await _stored(st, conn_id)
    if not old.active:
        return found(st, conn_id)
    await _guard(st, _others(st, conn_id), conn_id)
    conn = await _save(
        st, audit, old, raw, old.next(actor, active=False), "admin.connection.deactivated"
    )
    for user in await st.users.list_users(conn_id):
        await st.sessions.revoke_user(user.id)
    return conn


async def delete(st: State, audit: Audit, conn_id: str) -> dict[str, Any]:
    """Retire the connection's users (sessions and SCIM tokens revoked), then remove it."""
    old, raw = await _stored(st, conn_id)
    await _guard(st, _others(st, conn_id), conn_id)
    users = await st.users.list_users(conn_id)
    sessions = sum([await st.sessions.count_for_user(u.id) for u in users])
    try:
        await ConnectionStore(st.kv).delete(conn_id, raw)
    except VersionConflict:
        raise _conflict(old) from None
    await st.connection_sync.announce(conn_id)
    retired = await lifecycle_of(st).retire_connection(conn_id, "connection_deleted")
    audit(
        "admin.connection.deleted", connection=conn_id, retired_users=retired,
        revoked_sessions=sessions, changes=diff(old, None),
    )  # fmt: skip
    return {"id": conn_id, "retired_users": retired, "revoked_sessions": sessions}


async def rollover(
    st: State, audit: Audit, actor: str, conn_id: str, step: str, body: dict[str, Any]
) -> Connection:
    """SP certificate rollover in three steps, each a new version in force everywhere:
    `add` a second pair (published, decrypts, does not sign yet) so the IdP can pick it up;
    `promote` it to sign; `retire` the old one once the IdP uses the new one."""
    old, raw = await _stored(st, conn_id)
    pairs = list(old.sealed.get("sp_keys", []))
    if old.type != "saml":
        raise Refusal(409, "not_saml", "only a SAML connection has SP certificates")
    if step == "add":
        if len(pairs) >= MAX_SP_KEYS:
            raise Refusal(409, "rollover_in_progress", ROLLOVER_BUSY)
        try:
            name = old.settings.get("name", conn_id)
            pairs.append(await asyncio.to_thread(new_key_pair, st.box, conn_id, body, name))
        except RequestRefused as exc:
            raise Refusal.of(exc) from None
    elif len(pairs) < 2:
        raise Refusal(409, "no_rollover", "add a second certificate first")
    elif step == "promote":
        pairs = [pairs[-1], *pairs[:-1]]
    else:
        pairs = pairs[:1]
    new = old.next(actor, sealed={**old.sealed, "sp_keys": pairs})
    return await _save(st, audit, old, raw, new, f"admin.connection.certificate_{step}")


async def probe(st: State, audit: Audit, conn_id: str) -> dict[str, Any]:
    """The IdP checked now: metadata or discovery, keys, certificate dates."""
    conn = found(st, conn_id)
    if conn.engine is None:
        raise Refusal(409, "disabled", "the connection is disabled in the config file")
    try:
        lines = await conn.engine.probe()
    except AuthgateError as exc:
        lines = [(False, f"{exc.reason}: {exc.detail}")]
    audit("admin.connection.tested", connection=conn.id)
    checks = [{"ok": ok, "check": line} for ok, line in lines]
    return {"id": conn.id, "ok": all(ok for ok, _ in lines), "checks": checks}
