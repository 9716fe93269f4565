"""The admin pages for connections: the same operations as the JSON API, as forms.

Each form carries a token only a page that knows the admin's session can
make, on top of the same-origin check every admin write already passes. A
refused form is shown again with everything the admin typed (secrets
excepted) and the sentence that names the field to fix, so nothing is lost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from functools import partial
from typing import Any
from urllib.parse import quote

from aiohttp import web
from markupsafe import Markup

from authgate import connection_admin as ops
from authgate.connection_admin import Refusal
from authgate.connection_store import ConnectionStore
from authgate.connections import Connection
from authgate.csv_import import CsvFileError, import_users
from authgate.errors import BadRequest, Forbidden
from authgate.keys import DEFAULT_DAYS
from authgate.retirement import RetirementRefused
from authgate.scim.tokens import ScimTokens
from authgate.tokens import TokenInfo
from authgate.web import oidc, saml
from authgate.web.admin import apply_user_change, iso
from authgate.web.admin_access import Actor, audit_admin
from authgate.web.forms import read_multipart
from authgate.web.state import State, state

MAX_FORM = 4 * 1024 * 1024
COPY_SCRIPT = (
    'document.querySelectorAll("button[data-copy]").forEach((b) => b.addEventListener("click",'
    " () => navigator.clipboard.writeText(document.getElementById(b.dataset.copy).textContent)));"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(COPY_SCRIPT.encode()).digest()).decode()
SP_LABELS = (
    ("Entity ID (Identifier)", "entity_id"),
    ("ACS URL (Reply URL)", "acs_url"),
    ("Single logout URL", "slo_url"),
    ("SP metadata URL", "metadata_url"),
    ("Redirect URI", "redirect_uri"),
)
# What a page shows only sometimes: a notice, a refusal, test results, a new token, ...
OPTIONAL = ("notice", "problem", "checks", "new_token", "report", "version")
STARTERS = {"saml": saml.start_login, "oidc": oidc.start_login}
_SPLIT = re.compile(r"[\s,]+")
# Form fields sent to the API as they are typed (when not left empty).
TEXT_FIELDS = (
    "id", "issuer", "client_id", "client_secret", "preset", "organization", "match_key",
    "post_logout_url", "slo_path", "metadata_path", "redirect_path",
)  # fmt: skip
# Emptied in an edit form: back to the default (a field the form did not show stays).
CLEARABLE = (
    "organization", "match_key", "post_logout_url", "slo_path", "metadata_path", "redirect_path",
    "name_id_format", "response_binding",
)  # fmt: skip
CHOICES = ("name_id_format", "response_binding")


def form_token(request: web.Request) -> str:
    """Bound to the admin's session cookie: a foreign page cannot know it."""
    sid = request.cookies.get(state(request).cookies.session_name, "")
    return hashlib.sha256(b"authgate admin form\0" + sid.encode()).hexdigest()


async def _form(request: web.Request, actor: Actor) -> dict[str, str]:
    fields = await read_multipart(request, MAX_FORM, BadRequest)
    if actor.kind == "session" and not hmac.compare_digest(
        fields.get("csrf", ""), form_token(request)
    ):
        raise Forbidden("cross_origin_request", "an admin form without its token")
    return fields


def _audit(request: web.Request, actor: Actor) -> ops.Audit:
    return partial(audit_admin, request, actor)


def page(request: web.Request, template: str, actor: Actor, **context: Any) -> web.Response:
    st = state(request)
    for optional in OPTIONAL:
        context.setdefault(optional, None)
    response = st.pages.render(
        template,
        actor=actor,
        logout_url=st.url("/logout"),
        csrf=form_token(request),
        index_url=st.url("/admin/"),
        copy_script=Markup(COPY_SCRIPT),  # noqa: S704 - a constant, hashed into the CSP below
        **context,
    )
    policy = response.headers["Content-Security-Policy"]
    response.headers["Content-Security-Policy"] = f"{policy}; script-src 'sha256-{_SCRIPT_HASH}'"
    return response


def _conn_url(st: State, conn_id: str) -> str:
    return st.url("/admin/connections/" + quote(conn_id, safe=""))


def _lines(text: str) -> list[dict[str, Any]]:
    """`group = role, role` lines as role mappings; a line without `=` is refused."""
    mappings = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        group, sep, roles = line.partition("=")
        if not sep or not group.strip() or not roles.strip():
            message = f"role_mappings: line {number} is not `group = role, role`"
            raise Refusal(400, "invalid_request", message, "role_mappings")
        mappings.append({"group": group.strip(), "roles": [r for r in _SPLIT.split(roles) if r]})
    return mappings


def _given(fields: dict[str, str], name: str) -> str | None:
    """A form field the admin filled in (blank counts as not given)."""
    return fields.get(name, "").strip() or None


def request_body(fields: dict[str, str], editing: bool) -> dict[str, Any]:
    """A connection form as the JSON API's request body; empty fields are not sent."""

    given = partial(_given, fields)
    body: dict[str, Any] = {"type": fields.get("type"), "name": fields.get("name", "")}
    for name in TEXT_FIELDS + CHOICES:
        if (value := given(name)) is not None:
            body[name] = value
        elif editing and name in CLEARABLE and name in fields:
            body[name] = None
    if given("acs_urls") or (editing and "acs_urls" in fields):
        body["acs_urls"] = [
            line.strip() for line in fields["acs_urls"].splitlines() if line.strip()
        ]
    if given("scopes"):
        body["scopes"] = _SPLIT.split(fields["scopes"].strip())
    body["domains"] = [d for d in _SPLIT.split(fields.get("domains", "").strip()) if d]
    if given("provisioning"):
        body["provisioning"] = fields["provisioning"]
    access: dict[str, Any] = {"role_mappings": _lines(fields.get("role_mappings", ""))}
    if given("default_role"):
        access["default_role"] = fields["default_role"].strip()
    body["access"] = access
    if fields.get("type") == "saml":
        idp_side(body, fields)
        if not editing and (given("cert_subject") or given("cert_days")):
            days = given("cert_days") or str(DEFAULT_DAYS)
            if not days.isdigit():
                raise Refusal(400, "invalid_request", "cert_days: expected a number of days")
            body["certificate"] = {
                "subject": given("cert_subject") or body["name"],
                "valid_days": int(days),
            }
    if editing:
        version = given("version") or ""
        body["version"] = int(version) if version.isdigit() else -1
        body.pop("id", None)
        body.pop("type", None)
    return body


def idp_side(body: dict[str, Any], fields: dict[str, str]) -> None:
    """Exactly one IdP source reaches the request; more than one is refused by the API."""
    given = partial(_given, fields)
    if given("idp_metadata_url"):
        body["idp_metadata_url"] = fields["idp_metadata_url"].strip()
    xml = given("idp_metadata_upload") or given("idp_metadata_xml")
    if xml:
        body["idp_metadata_xml"] = xml
    if given("idp_entity_id") or given("idp_sso_url") or given("idp_certificate"):
        body["idp"] = {
            "entity_id": given("idp_entity_id") or "",
            "sso_url": given("idp_sso_url") or "",
            "certificates": [given("idp_certificate")] if given("idp_certificate") else [],
        }


def _form_page(
    request: web.Request, actor: Actor, kind: str, values: dict[str, str], **context: Any
) -> web.Response:
    st = state(request)
    shown = {k: v for k, v in values.items() if k not in ("client_secret", "csrf")}
    if shown.get("idp_metadata_upload"):
        shown["idp_metadata_xml"] = shown.pop("idp_metadata_upload")
    return page(
        request,
        "admin_connection_form.html",
        actor,
        kind=kind,
        values=shown,
        back_url=context.pop("back_url", st.url("/admin/")),
        **context,
    )


async def new_form(request: web.Request, actor: Actor) -> web.StreamResponse:
    kind = "oidc" if request.query.get("type") == "oidc" else "saml"
    action = state(request).url("/admin/connections/new")
    return _form_page(request, actor, kind, {}, action=action, editing=False)


async def create(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    fields = await _form(request, actor)
    kind = "oidc" if fields.get("type") == "oidc" else "saml"
    try:
        body = request_body(fields, editing=False)
        conn = await ops.create(st, _audit(request, actor), actor.name, body, actor.organization)
    except Refusal as exc:
        action = st.url("/admin/connections/new")
        return _form_page(
            request, actor, kind, fields, action=action, editing=False, problem=exc.message
        )
    raise web.HTTPSeeOther(_conn_url(st, conn.id))


async def _details(st: State, conn: Connection) -> dict[str, Any]:
    users = await st.users.list_users(conn.id)
    tokens = [t for t in await ScimTokens(st.kv).list() if t.connection == conn.id]
    return {
        "conn": await ops.describe(st, conn),
        "sp_labels": SP_LABELS,
        "users": users,
        "tokens": [
            {"id": t.id, "description": t.description, "created_at": iso(t.created_at)}
            for t in tokens
        ],
        "scim_url": st.settings.scim_url,
        "can_test_signin": conn.engine is not None,
        "action_url": _conn_url(st, conn.id),
    }


def _token(info: TokenInfo) -> dict[str, Any]:
    return {"id": info.id, "description": info.description, "created_at": iso(info.created_at)}


async def show(request: web.Request, actor: Actor, **extra: Any) -> web.StreamResponse:
    st = state(request)
    conn = st.connections.get(request.match_info["conn_id"])
    if conn is None:
        raise web.HTTPNotFound()
    status = extra.pop("status", 200)
    response = page(request, "admin_connection.html", actor, **await _details(st, conn), **extra)
    response.set_status(status)
    return response


def _refused(request: web.Request, actor: Actor, exc: Refusal):
    return show(request, actor, problem=exc.message, status=exc.status)


async def _act(request: web.Request, actor: Actor, operation: Any) -> web.StreamResponse:
    """Run one operation from a button, then show the connection (or why it was refused)."""
    st = state(request)
    await _form(request, actor)
    conn_id = request.match_info["conn_id"]
    try:
        await operation(st, _audit(request, actor), actor.name, conn_id)
    except Refusal as exc:
        return await _refused(request, actor, exc)
    raise web.HTTPSeeOther(_conn_url(st, conn_id))


async def activate(request: web.Request, actor: Actor) -> web.StreamResponse:
    return await _act(request, actor, ops.activate)


def _rollover(step: str) -> Any:
    async def handler(request: web.Request, actor: Actor) -> web.StreamResponse:
        async def operation(st: State, audit: ops.Audit, name: str, conn_id: str) -> Any:
            return await ops.rollover(st, audit, name, conn_id, step, {})

        return await _act(request, actor, operation)

    return handler


async def deactivate(request: web.Request, actor: Actor) -> web.StreamResponse:
    return await _act(request, actor, ops.deactivate)


async def delete(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    fields = await _form(request, actor)
    if fields.get("confirm") != "yes":
        return await _refused(
            request, actor, Refusal(400, "invalid_request", "tick the box to confirm the delete")
        )
    try:
        await ops.delete(st, _audit(request, actor), request.match_info["conn_id"])
    except Refusal as exc:
        return await _refused(request, actor, exc)
    raise web.HTTPSeeOther(st.url("/admin/"))


async def probe(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    await _form(request, actor)
    try:
        result = await ops.probe(st, _audit(request, actor), request.match_info["conn_id"])
    except Refusal as exc:
        return await _refused(request, actor, exc)
    return await show(request, actor, checks=result["checks"])


async def edit_form(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    conn_id = request.match_info["conn_id"]
    doc = await ConnectionStore(st.kv).get(conn_id)
    if doc is None:
        raise web.HTTPNotFound()
    return _form_page(
        request, actor, doc.type, _values(doc.settings), editing=True,
        version=doc.version, action=_conn_url(st, conn_id) + "/edit",
        back_url=_conn_url(st, conn_id),
    )  # fmt: skip


def _values(settings: dict[str, Any]) -> dict[str, str]:
    """A stored connection as the form's fields."""
    values = {k: v for k, v in settings.items() if isinstance(v, str)}
    values["domains"] = " ".join(settings.get("domains") or [])
    values["acs_urls"] = "\n".join(settings.get("acs_urls") or [])
    values["scopes"] = " ".join(settings.get("scopes") or ["openid", "email", "profile"])
    idp = settings.get("idp") or {}
    values["idp_entity_id"] = idp.get("entity_id", "")
    values["idp_sso_url"] = idp.get("sso_url", "")
    values["idp_certificate"] = (idp.get("certificates") or [""])[0]
    values["role_mappings"] = "\n".join(
        f"{m['group']} = {', '.join(m['roles'])}" for m in settings.get("role_mappings") or []
    )
    return values


async def edit(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    conn_id = request.match_info["conn_id"]
    fields = await _form(request, actor)
    try:
        body = request_body(fields, editing=True)
        audit = _audit(request, actor)
        await ops.update(st, audit, actor.name, conn_id, body, actor.organization)
    except Refusal as exc:
        version = fields.get("version", "")
        return _form_page(
            request, actor, fields.get("type", "saml"), fields, editing=True, version=version,
            action=_conn_url(st, conn_id) + "/edit", back_url=_conn_url(st, conn_id),
            problem=exc.message,
        )  # fmt: skip
    raise web.HTTPSeeOther(_conn_url(st, conn_id))


async def test_signin(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Run the real protocol through the connection; the result page signs no one in."""
    st = state(request)
    conn = st.connections.get(request.match_info["conn_id"])
    if conn is None or conn.engine is None:
        raise web.HTTPNotFound()
    audit_admin(request, actor, "admin.connection.test_signin_started", connection=conn.id)
    return await STARTERS[conn.type](request, conn, _conn_url(st, conn.id), test=True)


async def create_token(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    fields = await _form(request, actor)
    conn_id = request.match_info["conn_id"]
    if conn_id not in st.connections:
        raise web.HTTPNotFound()
    description = fields.get("description", "")[:200]
    info, secret = await ScimTokens(st.kv).create(conn_id, description)
    audit_admin(request, actor, "admin.scim_token.created", connection=conn_id, token_id=info.id)
    return await show(request, actor, new_token=secret)


async def revoke_token(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    await _form(request, actor)
    conn_id, token_id = request.match_info["conn_id"], request.match_info["token_id"]
    tokens = ScimTokens(st.kv)
    if any(t.id == token_id and t.connection == conn_id for t in await tokens.list()):
        await tokens.revoke(token_id)
        audit_admin(
            request, actor, "admin.scim_token.revoked", connection=conn_id, token_id=token_id
        )
    raise web.HTTPSeeOther(_conn_url(st, conn_id))


async def import_csv(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    fields = await _form(request, actor)
    conn_id = request.match_info["conn_id"]
    if conn_id not in st.connections:
        raise web.HTTPNotFound()
    try:
        report = await import_users(
            fields.get("file", "").encode(), conn_id, st.users, st.audit, actor=actor.name
        )
    except CsvFileError as exc:
        return await _refused(request, actor, Refusal(400, "invalid_csv", str(exc)))
    rows = [{"line": n, "outcome": "added", "reason": r} for n, r in report.added]
    rows += [{"line": n, "outcome": "skipped", "reason": r} for n, r in report.skipped]
    rows += [{"line": n, "outcome": "failed", "reason": r} for n, r in report.failed]
    summary = {
        "added": len(report.added),
        "skipped": len(report.skipped),
        "failed": len(report.failed),
        "rows": sorted(rows, key=lambda r: r["line"]),
    }
    audit_admin(
        request,
        actor,
        "admin.users.imported",
        connection=conn_id,
        **{k: summary[k] for k in ("added", "skipped", "failed")},
    )
    return await show(request, actor, report=summary)


async def change_roles(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    fields = await _form(request, actor)
    conn_id, user_id = request.match_info["conn_id"], request.match_info["user_id"]
    user = await st.users.get(user_id)
    if user is None or user.connection != conn_id:
        raise web.HTTPNotFound()
    roles = [r for r in _SPLIT.split(fields.get("roles", "").strip()) if r]
    try:
        await apply_user_change(st, _audit(request, actor), user, roles, None)
    except RetirementRefused as exc:
        return await _refused(request, actor, Refusal(409, "last_admin", exc.problems[0]))
    raise web.HTTPSeeOther(_conn_url(st, conn_id))


def add_routes(app: web.Application, base: str, guard: Any) -> None:
    one = base + "/connections/{conn_id}"
    app.router.add_get(base + "/connections/new", guard(new_form))
    app.router.add_post(base + "/connections/new", guard(create))
    app.router.add_get(one, guard(show))
    app.router.add_get(one + "/edit", guard(edit_form))
    app.router.add_post(one + "/edit", guard(edit))
    app.router.add_post(one + "/activate", guard(activate))
    app.router.add_post(one + "/deactivate", guard(deactivate))
    app.router.add_post(one + "/delete", guard(delete))
    app.router.add_post(one + "/test", guard(probe))
    for step in ("add", "promote", "retire"):
        app.router.add_post(f"{one}/sp-certificates/{step}", guard(_rollover(step)))
    app.router.add_get(one + "/test-signin", guard(test_signin))
    app.router.add_post(one + "/scim-tokens", guard(create_token))
    app.router.add_post(one + "/scim-tokens/{token_id}/revoke", guard(revoke_token))
    app.router.add_post(one + "/import", guard(import_csv))
    app.router.add_post(one + "/users/{user_id}", guard(change_roles))
