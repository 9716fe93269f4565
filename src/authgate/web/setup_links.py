"""Setup links: one connection's SP values, IdP form and test sign-in, for the customer's IT.

An admin makes a link for one connection, valid for a chosen time and
revocable; the secret in its path is the whole credential (stored as a
digest, like every bearer token). Whoever holds it can read that
connection's SP values, replace its IdP side and run the test sign-in, and
nothing else: the admin routes never accept it, and these routes never take
anything but the IdP fields from its form. Every use is an audit event.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import partial
from typing import Any

from aiohttp import web

from authgate import connection_admin as ops
from authgate.bodies import read_capped
from authgate.connection_admin import Refusal
from authgate.errors import BadRequest, Forbidden
from authgate.tokens import SetupLinks, TokenInfo
from authgate.web import admin_ui
from authgate.web.admin_access import Actor, audit_admin
from authgate.web.admin_connections import refusal_json
from authgate.web.client_info import CID, CLIENT
from authgate.web.forms import read_multipart
from authgate.web.origin import from_own_page, origin_of
from authgate.web.state import State, state

DEFAULT_HOURS = 72
MAX_HOURS = 30 * 24
MAX_BODY = 4096
NOTHING_GIVEN = "idp: give the metadata URL, the metadata, or the IdP's details"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _link_json(st: State, info: TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "connection": info.connection,
        "description": info.description,
        "created_at": _iso(info.created_at),
        "expires_at": _iso(info.expires_at),
    }


def _url(st: State, secret: str) -> str:
    return st.settings.public_url + st.url("/setup/" + secret)


async def _hours(request: web.Request) -> tuple[int, str]:
    if request.content_length == 0 or not request.can_read_body:
        return DEFAULT_HOURS, ""
    raw = await read_capped(request.content, MAX_BODY)
    try:
        data = json.loads(raw) if len(raw) <= MAX_BODY else None
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or set(data) - {"valid_for_hours", "description"}:
        message = 'body: send {"valid_for_hours": 72, "description": "…"}'
        raise Refusal(400, "invalid_request", message, "body")
    hours = data.get("valid_for_hours", DEFAULT_HOURS)
    if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= MAX_HOURS:
        message = f"valid_for_hours: expected a number of hours from 1 to {MAX_HOURS}"
        raise Refusal(400, "invalid_request", message, "valid_for_hours")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 200:
        message = "description: expected text of at most 200 characters"
        raise Refusal(400, "invalid_request", message, "description")
    return hours, description


async def create(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    conn_id = request.match_info["conn_id"]
    try:
        conn = ops.found(st, conn_id)
        if conn.source == "file":
            message = f"connection {conn_id} is managed by the config file: no setup link"
            raise Refusal(409, "managed_by_config", message)
        hours, description = await _hours(request)
    except Refusal as exc:
        return refusal_json(request, exc)
    info, secret = await SetupLinks(st.kv).create(conn_id, description, ttl=hours * 3600.0)
    audit_admin(
        request, actor, "admin.setup_link.created", connection=conn_id, link_id=info.id,
        expires_at=_iso(info.expires_at),
    )  # fmt: skip
    return web.json_response({**_link_json(st, info), "url": _url(st, secret)}, status=201)


async def listed(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    conn_id = request.match_info["conn_id"]
    links = [i for i in await SetupLinks(st.kv).list() if i.connection == conn_id]
    return web.json_response({"setup_links": [_link_json(st, i) for i in links]})


async def revoke(request: web.Request, actor: Actor) -> web.StreamResponse:
    st = state(request)
    conn_id, link_id = request.match_info["conn_id"], request.match_info["link_id"]
    links = SetupLinks(st.kv)
    if not any(i.id == link_id and i.connection == conn_id for i in await links.list()):
        return refusal_json(request, Refusal(404, "unknown_setup_link", "no such setup link"))
    await links.revoke(link_id)
    audit_admin(request, actor, "admin.setup_link.revoked", connection=conn_id, link_id=link_id)
    return web.Response(status=204)


async def _holder(request: web.Request) -> tuple[TokenInfo, Actor]:
    """The link in the path, or a refusal that says only that it is not (or no longer) valid."""
    st = state(request)
    info = await SetupLinks(st.kv).verify(request.match_info["secret"])
    if info is None or info.connection not in st.connections:
        st.audit.emit(
            "admin.setup_link.refused", path_kind=request.method, ip=request[CLIENT].ip,
            correlation_id=request[CID],
        )  # fmt: skip
        raise Forbidden("setup_link_invalid", "the setup link is expired, revoked or unknown")
    return info, Actor("token", f"setup-link:{info.id}")


def _audit(request: web.Request, actor: Actor, info: TokenInfo, what: str) -> None:
    audit_admin(request, actor, "admin.setup_link.used", connection=info.connection, action=what)


async def _page(
    request: web.Request, info: TokenInfo, actor: Actor, saved: bool = False, **extra: Any
) -> web.Response:
    st = state(request)
    conn = ops.found(st, info.connection)
    return admin_ui.page(
        request, "setup.html", actor, conn=await ops.describe(st, conn),
        sp_labels=admin_ui.SP_LABELS, expires_at=_iso(info.expires_at),
        setup_url=st.url("/setup/" + request.match_info["secret"]), saved=saved, **extra,
    )  # fmt: skip


async def show(request: web.Request) -> web.StreamResponse:
    info, actor = await _holder(request)
    _audit(request, actor, info, "viewed")
    return await _page(request, info, actor, saved=request.query.get("saved") == "1")


async def save_idp(request: web.Request) -> web.StreamResponse:
    """Only the IdP side is taken from the form; everything else about the connection stays."""
    info, actor = await _holder(request)
    st = state(request)
    origin = origin_of(st.settings.public_url)
    if origin is None or not from_own_page(request.headers, origin):
        raise Forbidden("cross_origin_request", "a setup form posted from another page")
    fields = await read_multipart(request, admin_ui.MAX_FORM, BadRequest)
    body: dict[str, Any] = {"version": int(v) if (v := fields.get("version", "")).isdigit() else -1}
    admin_ui.idp_side(body, fields)
    if len(body) == 1:
        return await _page(
            request,
            info,
            actor,
            problem="idp: give the metadata URL, the metadata, or the IdP's details",
        )
    # Whatever the holder gave (URL, XML or details) names the IdP's endpoints.
    body["idp_metadata_public_only"] = True
    _audit(request, actor, info, "idp_changed")
    try:
        await ops.update(
            st, partial(audit_admin, request, actor), actor.name, info.connection, body
        )
    except Refusal as exc:
        return await _page(request, info, actor, problem=exc.message)
    raise web.HTTPSeeOther(st.url("/setup/" + request.match_info["secret"]) + "?saved=1")


async def test_signin(request: web.Request) -> web.StreamResponse:
    info, actor = await _holder(request)
    st = state(request)
    conn = ops.found(st, info.connection)
    if conn.engine is None:
        raise web.HTTPNotFound()
    _audit(request, actor, info, "test_signin")
    back = st.url("/setup/" + request.match_info["secret"])
    return await admin_ui.STARTERS[conn.type](request, conn, back, test=True)


def add_routes(app: web.Application, prefix: str, guard: Any) -> None:
    links = prefix + "/admin/api/connections/{conn_id}/setup-links"
    app.router.add_post(links, guard(create))
    app.router.add_get(links, guard(listed))
    app.router.add_delete(links + "/{link_id}", guard(revoke))
    holder = prefix + "/setup/{secret}"
    app.router.add_get(holder, show)
    app.router.add_post(holder, save_idp)
    app.router.add_get(holder + "/test-signin", test_signin)
