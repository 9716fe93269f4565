"""Admin API for connections: create, read, edit, test, activate, deactivate, delete.

A change is written to the store as a new version (compare-and-set, so a
second admin editing the same version is told, not overwritten), put in force
on this replica at once and announced to the others (`connection_sync`).
Config-file connections are listed but read-only. Everything that ends
access (deactivate, delete, a role mapping change) passes the lock-out guard
first, and every change is an `admin.connection.*` audit event with a diff
that shows whether a secret changed, never the secret.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from authgate.connection_requests import (
    RequestRefused,
    changed_document,
    check_metadata,
    diff,
    new_document,
    settings_problem,
)
from authgate.connection_store import ConnectionDocument, ConnectionStore, VersionConflict
from authgate.connections import Connection
from authgate.errors import AuthgateError, LoginFailed
from authgate.policy import AccessRules
from authgate.protocols.saml_config import SpEndpoints
from authgate.provisioning import lifecycle_of
from authgate.retirement import RetirementRefused, admin_connections, check_admin_safety
from authgate.settings import SamlConnection
from authgate.web.admin_access import Actor, audit_admin
from authgate.web.client_info import CID
from authgate.web.state import State, state

MAX_BODY = 2 * 1024 * 1024
METADATA_FETCH_TIMEOUT = 10.0
NO_MASTER_KEY = (
    "authgate has no master key, so it cannot store this connection's secrets:"
    " run `authgate secrets keygen` and give the key to every replica in"
    " AUTHGATE_MASTER_KEY (or secrets.master_key_file), then try again"
)


def _refusal(request: web.Request, status: int, error: str, message: str, **extra: Any):
    body = {"error": error, "message": message, **extra, "correlation_id": request[CID]}
    return web.json_response(body, status=status)


# A refusal's status follows from its reason: a clash with what exists, or a body too large.
STATUS = {"connection_exists": 409, "domain_claimed": 409, "body_too_large": 413}


def _refused(request: web.Request, exc: RequestRefused) -> web.Response:
    status = STATUS.get(exc.error, 400)
    return _refusal(request, status, exc.error, f"{exc.field}: {exc.message}", field=exc.field)


def _exists(conn_id: str) -> RequestRefused:
    message = f"connection {conn_id} exists already: choose another id"
    return RequestRefused("id", message, "connection_exists")


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise RequestRefused("body", f"larger than {MAX_BODY} bytes", "body_too_large")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise RequestRefused("body", f"larger than {MAX_BODY} bytes", "body_too_large")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestRefused(
            "body", 'not JSON: send an object such as {"type": "saml", …}'
        ) from None
    if not isinstance(data, dict):
        raise RequestRefused("body", "must be a JSON object")
    return data


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


async def connection_json(st: State, conn: Connection) -> dict[str, Any]:
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
    }


async def _fetch_metadata(st: State, url: str) -> str:
    """An IdP metadata URL must answer usable metadata now, or the create is refused."""
    try:
        timeout = aiohttp.ClientTimeout(total=METADATA_FETCH_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
            if resp.status != 200:
                raise RequestRefused("idp_metadata_url", f"the server answered HTTP {resp.status}")
            raw = await resp.content.read(1024 * 1024 + 1)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise RequestRefused(
            "idp_metadata_url", "could not be fetched: check the URL and that authgate can reach it"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestRefused("idp_metadata_url", "did not answer a UTF-8 XML document") from None
    check_metadata(text)
    return text


def _claimed_domains(st: State, doc: ConnectionDocument) -> None:
    """A sign-in domain routes to one connection only."""
    wanted = {d.lower().lstrip("@") for d in doc.settings.get("domains") or []}
    for other in st.connections:
        if other.id != doc.id and wanted & set(other.settings.domains):
            taken = ", ".join(sorted(wanted & set(other.settings.domains)))
            raise RequestRefused(
                "domains", f"{taken} is already routed to connection {other.id}", "domain_claimed"
            )


async def _validated(st: State, doc: ConnectionDocument) -> Connection:
    _claimed_domains(st, doc)
    if isinstance(url := doc.settings.get("idp_metadata_url"), str):
        await _fetch_metadata(st, url)
    try:
        return st.connection_sync.describe(doc)
    except ValidationError as exc:
        raise settings_problem(exc) from None


async def create_connection(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    if not st.box.available():
        return _refusal(request, 400, "no_master_key", NO_MASTER_KEY)
    try:
        body = await _body(request)
        doc = new_document(body, st.box, actor.name)
        if doc.id in st.connections:
            raise _exists(doc.id)
        await _validated(st, doc)
    except RequestRefused as exc:
        return _refused(request, exc)
    if not await ConnectionStore(st.kv).create(doc):
        return _refused(request, _exists(doc.id))
    await st.connection_sync.announce(doc.id)
    audit_admin(
        request, actor, "admin.connection.created", connection=doc.id, changes=diff(None, doc)
    )
    conn = st.connections.get(doc.id)
    assert conn is not None
    return web.json_response(await connection_json(st, conn), status=201)


async def list_connections(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    rows = [await connection_json(st, c) for c in st.connections]
    return web.json_response({"connections": rows})


def _unknown(request: web.Request) -> web.Response:
    return _refusal(request, 404, "unknown_connection", "no such connection")


async def get_connection(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    conn = st.connections.get(request.match_info["conn_id"])
    if conn is None:
        return _unknown(request)
    return web.json_response(await connection_json(st, conn))


async def _stored(request: web.Request) -> tuple[ConnectionDocument, bytes] | web.Response:
    """The store document the path names, or the answer that says why there is none."""
    st = state(request)
    conn_id = request.match_info["conn_id"]
    conn = st.connections.get(conn_id)
    if conn is not None and conn.source == "file":
        return _refusal(
            request, 409, "managed_by_config",
            f"connection {conn_id} is managed by the config file: change it there",
        )  # fmt: skip
    found = await ConnectionStore(st.kv).read(conn_id)
    return found if found is not None else _unknown(request)


def _conflict(request: web.Request, doc: ConnectionDocument) -> web.Response:
    return _refusal(
        request, 409, "version_conflict",
        f"connection {doc.id} was changed by someone else: reload it and make your change again",
    )  # fmt: skip


async def _guard(st: State, excluding: str) -> None:
    """Refuse a change that leaves no active connection able to sign an admin in."""
    rules = [c.rules for c in st.connections.active() if c.id != excluding]
    await check_admin_safety(st.users, st.settings.admin.role, rules, {excluding}, False)


async def _save(
    request: web.Request, actor: Actor, old: ConnectionDocument, raw: bytes,
    new: ConnectionDocument, event: str,
) -> web.StreamResponse:  # fmt: skip
    st = state(request)
    try:
        await ConnectionStore(st.kv).replace(raw, new)
    except VersionConflict:
        return _conflict(request, old)
    await st.connection_sync.announce(new.id)
    audit_admin(
        request, actor, event, connection=new.id, version=new.version, changes=diff(old, new)
    )
    conn = st.connections.get(new.id)
    if conn is None or conn.version != new.version:
        return _refusal(
            request,
            500,
            "not_in_force",
            "the change was stored but could not be put in force; see the log",
        )
    return web.json_response(await connection_json(st, conn))


async def update_connection(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    found = await _stored(request)
    if isinstance(found, web.Response):
        return found
    old, raw = found
    try:
        body = await _body(request)
        if body.get("version") != old.version:
            return _conflict(request, old)
        new = changed_document(old, body, st.box, actor.name)
        await _validated(st, new)
        if new.active and new.access != old.access:
            await _guard_mapping(st, new)
    except RequestRefused as exc:
        return _refused(request, exc)
    except RetirementRefused as exc:
        return _refusal(request, 409, "last_admin", exc.problems[0])
    return await _save(request, actor, old, raw, new, "admin.connection.updated")


async def _guard_mapping(st: State, new: ConnectionDocument) -> None:
    """A role mapping change must leave someone able to sign in as admin."""
    conn = st.connection_sync.describe(new)
    rules = [c.rules for c in st.connections.active() if c.id != new.id] + [conn.rules]
    if not await _able(st, rules):
        raise RetirementRefused(
            [f"this mapping leaves no one able to sign in with the {st.settings.admin.role!r} role"]
        )


async def _able(st: State, rules: list[AccessRules]) -> bool:
    return bool(await admin_connections(st.users, st.settings.admin.role, rules))


async def activate(request: web.Request, actor: Actor) -> web.StreamResponse:
    found = await _stored(request)
    if isinstance(found, web.Response):
        return found
    old, raw = found
    if old.active:
        return await get_connection(request, actor)
    new = old.next(actor.name, active=True)
    return await _save(request, actor, old, raw, new, "admin.connection.activated")


async def deactivate(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    found = await _stored(request)
    if isinstance(found, web.Response):
        return found
    old, raw = found
    if not old.active:
        return await get_connection(request, actor)
    try:
        await _guard(st, old.id)
    except RetirementRefused as exc:
        return _refusal(request, 409, "last_admin", exc.problems[0])
    new = old.next(actor.name, active=False)
    response = await _save(request, actor, old, raw, new, "admin.connection.deactivated")
    for user in await st.users.list_users(old.id):
        await st.sessions.revoke_user(user.id)
    return response


async def delete_connection(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Retire the connection's users (sessions revoked, SCIM tokens revoked), then remove it."""
    st = state(request)
    found = await _stored(request)
    if isinstance(found, web.Response):
        return found
    old, raw = found
    try:
        await _guard(st, old.id)
    except RetirementRefused as exc:
        return _refusal(request, 409, "last_admin", exc.problems[0])
    users = await st.users.list_users(old.id)
    sessions = sum([await st.sessions.count_for_user(u.id) for u in users])
    try:
        await ConnectionStore(st.kv).delete(old.id, raw)
    except VersionConflict:
        return _conflict(request, old)
    await st.connection_sync.announce(old.id)
    retired = await lifecycle_of(st).retire_connection(old.id, "connection_deleted")
    audit_admin(
        request, actor, "admin.connection.deleted", connection=old.id,
        retired_users=retired, revoked_sessions=sessions, changes=diff(old, None),
    )  # fmt: skip
    return web.json_response({"id": old.id, "retired_users": retired, "revoked_sessions": sessions})


async def test_connection(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Probe the IdP now: metadata or discovery, keys, certificate dates."""
    st = state(request)
    conn = st.connections.get(request.match_info["conn_id"])
    if conn is None:
        return _unknown(request)
    if conn.engine is None:
        return _refusal(request, 409, "disabled", "the connection is disabled in the config file")
    try:
        lines = await conn.engine.probe()
    except (LoginFailed, AuthgateError) as exc:
        lines = [(False, f"{exc.reason}: {exc.detail}")]
    audit_admin(request, actor, "admin.connection.tested", connection=conn.id)
    checks = [{"ok": ok, "check": line} for ok, line in lines]
    return web.json_response({"id": conn.id, "ok": all(ok for ok, _ in lines), "checks": checks})


def add_routes(app: web.Application, base: str, guard: Any) -> None:
    path = base + "/api/connections"
    one = path + "/{conn_id}"
    app.router.add_get(path, guard(list_connections))
    app.router.add_post(path, guard(create_connection))
    app.router.add_get(one, guard(get_connection))
    app.router.add_patch(one, guard(update_connection))
    app.router.add_delete(one, guard(delete_connection))
    app.router.add_post(one + "/activate", guard(activate))
    app.router.add_post(one + "/deactivate", guard(deactivate))
    app.router.add_post(one + "/test", guard(test_connection))
