"""Admin page and JSON API under `{prefix}/admin/`: connections, sessions, users.

Every route goes through `admin_access.authorize` first, and every request
that gets through is written to the audit log as an `admin.*` event (reads
too: a user list is personal data). Counting sessions and searching users
walks the user index, which is fine for the thousands of users an operator
browses by hand; there is no global session index to keep consistent.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import yaml
from aiohttp import web
from aiohttp.typedefs import Handler

from authgate.bodies import read_capped
from authgate.csv_import import CsvFileError, import_users
from authgate.policy import AccessRules
from authgate.retirement import Lifecycle, RetirementRefused, check_user_retirement
from authgate.scim.tokens import ScimTokens
from authgate.settings import Settings
from authgate.tokens import TokenInfo
from authgate.users import User, UserStore
from authgate.web import admin_connections
from authgate.web.admin_access import ADMIN, Actor, AdminAccess, audit_admin, authorize
from authgate.web.admin_changes import read_token_request, read_user_change
from authgate.web.client_info import CID
from authgate.web.middlewares import wants_html
from authgate.web.signin import restamp
from authgate.web.state import State, state

AdminHandler = Callable[[web.Request, Actor], Awaitable[web.StreamResponse]]
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_QUERY = 200
MAX_CSV_BYTES = 10 * 1024 * 1024
NOTICES = {
    "retired": "The user was retired (deactivated); {count} active session(s) revoked.",
    "revoked": "{count} active session(s) revoked.",
}


def iso(timestamp: float | str | None) -> str | None:
    if timestamp in (None, ""):
        return None
    moment = dt.datetime.fromtimestamp(float(timestamp), dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def admin_only(handler: AdminHandler) -> Handler:
    """Refuse anyone but an admin before the handler runs; never cache an admin answer."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        outcome = await authorize(request)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        refusal = await _out_of_scope(request, outcome)
        if refusal is not None:
            return refusal
        response = await handler(request, outcome)
        response.headers["Cache-Control"] = "no-store"
        return response

    return guarded


async def _out_of_scope(request: web.Request, actor: Actor) -> web.Response | None:
    """An organization admin reaching another organization's connection or user: as if it
    did not exist (404), so ids of other organizations cannot even be probed."""
    if actor.organization is None:
        return None
    st = state(request)
    if (conn_id := request.match_info.get("conn_id")) is not None:
        conn = st.connections.get(conn_id)
        if conn is None or not actor.sees(conn.settings.organization):
            return _unknown_connection(request)
    if (user_id := request.match_info.get("user_id")) is not None:
        user = await st.users.get(user_id)
        if user is None or not actor.sees(organization_of(st, user.connection)):
            return _unknown_user(request)
    return None


def organization_of(st: State, conn_id: str) -> str | None:
    conn = st.connections.get(conn_id)
    return conn.settings.organization if conn is not None else None


async def connection_report(st: State, actor: Actor) -> list[dict[str, Any]]:
    """Each connection the admin sees, with readiness (metadata freshness) and last outcomes."""
    rows = []
    for conn in st.connections:
        if not actor.sees(conn.settings.organization):
            continue
        info = await st.status.get(conn.id)
        if conn.engine is None:
            problem: str | None = "disabled in the configuration"
        elif not conn.active:
            problem = "not active: test it, then activate it"
        else:
            problem = conn.engine.readiness_problem()
        failure = None
        if info.get("last_failure_at"):
            failure = {
                "at": iso(info["last_failure_at"]),
                "reason": info.get("last_failure_reason"),
                "correlation_id": info.get("last_failure_correlation_id"),
            }
        rows.append(
            {
                "id": conn.id,
                "name": conn.name,
                "type": conn.type,
                "enabled": conn.active,
                "url": st.url("/admin/connections/" + quote(conn.id, safe="")),
                "managed_by": "config file" if conn.source == "file" else "admin",
                "ready": problem is None,
                "problem": problem,
                "last_success_at": iso(info.get("last_success_at")),
                "last_failure": failure,
            }
        )
    return rows


async def _all_users(st: State, actor: Actor) -> list[User]:
    found = [await st.users.get(user_id) for user_id in await st.users.all_ids()]
    return sorted(
        (u for u in found if u is not None and actor.sees(organization_of(st, u.connection))),
        key=lambda u: ((u.email or "").lower(), u.id),
    )


async def active_sessions(st: State, users: list[User]) -> int:
    return sum([await st.sessions.count_for_user(user.id) for user in users])


def _matches(user: User, needle: str) -> bool:
    fields = (user.email, user.display_name, user.external_id, user.id)
    return any(needle in (value or "").lower() for value in fields)


async def user_json(st: State, user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "connection": user.connection,
        "external_id": user.external_id,
        "roles": list(user.roles),
        "active": user.active,
        "source": user.source,
        "created_at": iso(user.created_at),
        "last_login_at": iso(user.last_login_at),
        "sessions": await st.sessions.count_for_user(user.id),
    }


async def search_users(st: State, users: list[User], query: str, limit: int) -> dict[str, Any]:
    """Users whose email, name, external id or id contains `query` (case-insensitive)."""
    needle = query.strip().lower()
    matched = [u for u in users if _matches(u, needle)]
    return {
        "query": query,
        "total": len(matched),
        "truncated": len(matched) > limit,
        "users": [await user_json(st, u) for u in matched[:limit]],
    }


def _bad_request(request: web.Request, message: str) -> web.Response:
    return web.json_response(
        {"error": "invalid_request", "message": message, "correlation_id": request[CID]},
        status=400,
    )


def _limit(request: web.Request) -> int | None:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        return None
    return int(raw)


async def api_status(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    audit_admin(request, actor, "admin.status.viewed")
    all_users = await _all_users(st, actor)
    return web.json_response(
        {
            "connections": await connection_report(st, actor),
            "active_sessions": await active_sessions(st, all_users),
            "users": {
                "total": len(all_users),
                "active": sum(u.active for u in all_users),
            },
            "store": st.settings.session.store,
        }
    )


async def api_users(request: web.Request, actor: Actor) -> web.StreamResponse:
    query = request.query.get("q", "")
    limit = _limit(request)
    if limit is None:
        return _bad_request(request, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    if len(query) > MAX_QUERY:
        return _bad_request(request, f"q must be at most {MAX_QUERY} characters")
    audit_admin(request, actor, "admin.users.searched", query=query)
    st = state(request)
    return web.json_response(await search_users(st, await _all_users(st, actor), query, limit))


async def _target(request: web.Request) -> User | None:
    return await state(request).users.get(request.match_info["user_id"])


def _last_admin(request: web.Request, detail: str) -> web.Response:
    cid = request[CID]
    if wants_html(request):
        return state(request).pages.error(409, "last_admin", cid)
    body = {"error": "last_admin", "detail": detail, "correlation_id": cid}
    return web.json_response(body, status=409)


def _unknown_user(request: web.Request) -> web.Response:
    return web.json_response({"error": "unknown_user", "correlation_id": request[CID]}, status=404)


async def api_user(request: web.Request, actor: Actor) -> web.StreamResponse:
    user = await _target(request)
    if user is None:
        return _unknown_user(request)
    audit_admin(request, actor, "admin.user.viewed", user_id=user.id)
    return web.json_response({"user": await user_json(state(request), user)})


def _page_url(st: State, query: str, notice: str | None = None, count: int = 0) -> str:
    params = {"q": query} if query else {}
    if notice:
        params.update(notice=notice, count=str(count))
    suffix = "?" + urlencode(params) if params else ""
    return st.url("/admin/") + suffix


async def _after_action(
    request: web.Request, user: User, notice: str, revoked: int
) -> web.StreamResponse:
    """The page's forms get a redirect back to the same search; API clients get JSON."""
    st = state(request)
    if wants_html(request):
        location = _page_url(st, request.query.get("q", "")[:MAX_QUERY], notice, revoked)
        return web.Response(status=303, headers={"Location": location})
    return web.json_response({"user": await user_json(st, user), "revoked_sessions": revoked})


async def retire(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Retire like the CLI and SCIM do (deactivated, marked retired, sessions revoked),
    unless it would lock every admin out."""
    st = state(request)
    user = await _target(request)
    if user is None:
        return _unknown_user(request)
    try:
        await check_user_retirement(*admin_rules(st), user)
    except RetirementRefused as exc:
        audit_admin(
            request, actor, "admin.user.retire_refused", user_id=user.id, reason="last_admin"
        )
        return _last_admin(request, exc.problems[0])
    revoked = await st.sessions.count_for_user(user.id)
    lifecycle = Lifecycle(st.users, st.sessions, st.audit, ScimTokens(st.kv))
    user = await lifecycle.retire(user, "admin", actor=actor.name)
    audit_admin(
        request,
        actor,
        "admin.user.retired",
        user_id=user.id,
        email=user.email,
        connection=user.connection,
        revoked_sessions=revoked,
    )
    return await _after_action(request, user, "retired", revoked)


async def apply_user_change(
    st: State,
    audit: Callable[..., None],
    user: User,
    roles: list[str] | None,
    active: bool | None,
) -> tuple[User, int, int]:
    """A user's own roles and activity changed; live sessions follow at once.

    Returns the saved user and how many sessions were revoked and restamped;
    raises RetirementRefused when no one could sign in as admin afterwards.
    """
    wanted = replace(
        user,
        roles=tuple(dict.fromkeys(roles)) if roles is not None else user.roles,
        active=active if active is not None else user.active,
    )
    if st.settings.admin.role not in wanted.roles or not wanted.active:
        await check_user_retirement(*admin_rules(st), user)
    saved = await st.users.update(user, wanted)
    revoked = updated = 0
    if user.active and not saved.active:
        revoked = await st.sessions.revoke_user(saved.id)
    elif saved.roles != user.roles and (rules := st.connections.rules(saved.connection)):
        updated = await restamp(st, saved, rules)
    audit(
        "admin.user.updated",
        user_id=saved.id,
        roles=[list(user.roles), list(saved.roles)],
        active=[user.active, saved.active],
        revoked_sessions=revoked,
        updated_sessions=updated,
    )
    return saved, revoked, updated


async def change_user(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Set a user's own roles or switch the user off or on; live sessions follow at once."""
    st = state(request)
    user = await _target(request)
    if user is None:
        return _unknown_user(request)
    change = await read_user_change(request)
    if isinstance(change, str):
        return _bad_request(request, change)
    try:
        saved, revoked, updated = await apply_user_change(
            st, partial(audit_admin, request, actor), user, change.roles, change.active
        )
    except RetirementRefused as exc:
        return _last_admin(request, exc.problems[0])
    return web.json_response(
        {
            "user": await user_json(st, saved),
            "revoked_sessions": revoked,
            "updated_sessions": updated,
        }
    )


async def revoke_sessions(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    user = await _target(request)
    if user is None:
        return _unknown_user(request)
    revoked = await st.sessions.revoke_user(user.id)
    audit_admin(
        request,
        actor,
        "admin.user.sessions_revoked",
        user_id=user.id,
        email=user.email,
        revoked_sessions=revoked,
    )
    return await _after_action(request, user, "revoked", revoked)


def admin_rules(st: State) -> tuple[UserStore, str, list[AccessRules]]:
    """What the lock-out guard weighs: the users, the admin role, the active connections."""
    return st.users, st.settings.admin.role, [c.rules for c in st.connections.active()]


def _unknown_connection(request: web.Request) -> web.Response:
    body = {"error": "unknown_connection", "correlation_id": request[CID]}
    return web.json_response(body, status=404)


def _token_json(info: TokenInfo) -> dict[str, Any]:
    return {"id": info.id, "description": info.description, "created_at": iso(info.created_at)}


async def create_scim_token(request: web.Request, actor: Actor) -> web.StreamResponse:
    """A SCIM bearer token for one connection; its secret is in this answer and nowhere else."""
    st = state(request)
    conn_id = request.match_info["conn_id"]
    if conn_id not in st.connections:
        return _unknown_connection(request)
    wanted = await read_token_request(request)
    if isinstance(wanted, str):
        return _bad_request(request, wanted)
    info, secret = await ScimTokens(st.kv).create(conn_id, wanted.description)
    audit_admin(request, actor, "admin.scim_token.created", connection=conn_id, token_id=info.id)
    return web.json_response(
        {
            **_token_json(info),
            "connection": conn_id,
            "token": secret,
            "scim_base_url": st.settings.scim_url,
        },
        status=201,
    )


async def list_scim_tokens(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    conn_id = request.match_info["conn_id"]
    if conn_id not in st.connections:
        return _unknown_connection(request)
    tokens = [t for t in await ScimTokens(st.kv).list() if t.connection == conn_id]
    audit_admin(request, actor, "admin.scim_tokens.listed", connection=conn_id)
    return web.json_response({"tokens": [_token_json(t) for t in tokens]})


async def revoke_scim_token(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Revoke by id, only within the connection named in the path."""
    st = state(request)
    conn_id, token_id = request.match_info["conn_id"], request.match_info["token_id"]
    tokens = ScimTokens(st.kv)
    if not any(t.id == token_id and t.connection == conn_id for t in await tokens.list()):
        body = {"error": "unknown_token", "correlation_id": request[CID]}
        return web.json_response(body, status=404)
    await tokens.revoke(token_id)
    audit_admin(request, actor, "admin.scim_token.revoked", connection=conn_id, token_id=token_id)
    return web.Response(status=204)


async def import_csv(request: web.Request, actor: Actor) -> web.StreamResponse:
    """The CLI's `users import` over HTTP: the body is the CSV file, the report is JSON."""
    st = state(request)
    conn_id = request.match_info["conn_id"]
    if conn_id not in st.connections:
        return _unknown_connection(request)
    data = await read_capped(request.content, MAX_CSV_BYTES)
    if len(data) > MAX_CSV_BYTES:
        return web.json_response(
            {"error": "too_large", "limit_bytes": MAX_CSV_BYTES, "correlation_id": request[CID]},
            status=413,
        )
    try:
        report = await import_users(data, conn_id, st.users, st.audit, actor=actor.name)
    except CsvFileError as exc:
        audit_admin(
            request, actor, "admin.users.import_refused", connection=conn_id, reason=str(exc)
        )
        return web.json_response(
            {"error": "invalid_csv", "detail": str(exc), "correlation_id": request[CID]},
            status=400,
        )
    audit_admin(
        request,
        actor,
        "admin.users.imported",
        connection=conn_id,
        added=len(report.added),
        skipped=len(report.skipped),
        failed=len(report.failed),
    )
    return web.json_response(
        {
            "rows": report.rows,
            "added": [{"line": n, "external_id": e} for n, e in report.added],
            "skipped": [{"line": n, "external_id": e} for n, e in report.skipped],
            "failed": [{"line": n, "reason": r} for n, r in report.failed],
            "warnings": report.warnings,
        },
        status=200,
    )


def _notice(request: web.Request) -> str | None:
    template = NOTICES.get(request.query.get("notice", ""))
    count = request.query.get("count", "0")
    if template is None:
        return None
    return template.format(count=int(count) if count.isdigit() else 0)


async def page(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    query = request.query.get("q", "")[:MAX_QUERY]
    audit_admin(request, actor, "admin.page.viewed", query=query or None)
    all_users = await _all_users(st, actor)
    found = await search_users(st, all_users, query, DEFAULT_LIMIT)
    back = urlencode({"q": query}) if query else ""
    for user in found["users"]:
        action = st.url("/admin/api/users/" + quote(user["id"], safe=""))
        user["retire_url"] = f"{action}/retire" + (f"?{back}" if back else "")
        user["revoke_url"] = f"{action}/revoke-sessions" + (f"?{back}" if back else "")
    return st.pages.render(
        "admin.html",
        actor=actor,
        notice=_notice(request),
        connections=await connection_report(st, actor),
        active_sessions=await active_sessions(st, all_users),
        user_total=len(all_users),
        user_active=sum(u.active for u in all_users),
        found=found,
        query=query,
        search_url=st.url("/admin/"),
        new_url=st.url("/admin/connections/new"),
        logout_url=st.url("/logout"),
    )


async def _to_index(request: web.Request) -> web.Response:
    return web.Response(status=301, headers={"Location": state(request).url("/admin/")})


def openapi_document(api_base: str) -> dict[str, Any]:
    """The admin API's OpenAPI file, its server URL under this deployment's prefix."""
    text = resources.files("authgate.web").joinpath("admin_api.yaml").read_text("utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    document["servers"] = [{"url": api_base}]
    return document


def _openapi(api_base: str) -> AdminHandler:
    body = json.dumps(openapi_document(api_base)).encode()

    async def serve(request: web.Request, actor: Actor) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    return serve


def setup(app: web.Application, settings: Settings) -> None:
    """Register the admin routes (before the prefix catch-all) unless admin is disabled."""
    if not settings.admin.enabled:
        return
    app[ADMIN] = AdminAccess.from_settings(settings)
    base = settings.prefix + "/admin"
    app.router.add_get(base, _to_index)
    app.router.add_get(base + "/", admin_only(page))
    app.router.add_get(base + "/api/openapi.json", admin_only(_openapi(base + "/api")))
    app.router.add_get(base + "/api/status", admin_only(api_status))
    app.router.add_get(base + "/api/users", admin_only(api_users))
    app.router.add_get(base + "/api/users/{user_id}", admin_only(api_user))
    app.router.add_patch(base + "/api/users/{user_id}", admin_only(change_user))
    app.router.add_post(base + "/api/users/{user_id}/retire", admin_only(retire))
    app.router.add_post(base + "/api/users/{user_id}/revoke-sessions", admin_only(revoke_sessions))
    app.router.add_post(base + "/api/connections/{conn_id}/users/import", admin_only(import_csv))
    admin_connections.add_routes(app, base, admin_only)
    tokens = base + "/api/connections/{conn_id}/scim-tokens"
    app.router.add_get(tokens, admin_only(list_scim_tokens))
    app.router.add_post(tokens, admin_only(create_scim_token))
    app.router.add_delete(tokens + "/{token_id}", admin_only(revoke_scim_token))
