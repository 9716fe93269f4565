"""The JSON admin API for connections: `connection_admin` operations over HTTP."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from authgate import connection_admin as ops
from authgate.bodies import read_capped
from authgate.connection_admin import Refusal
from authgate.web.admin_access import Actor, audit_admin
from authgate.web.client_info import CID
from authgate.web.state import state

MAX_BODY = 2 * 1024 * 1024
Guard = Callable[[Callable[[web.Request, Actor], Awaitable[web.StreamResponse]]], Handler]


async def read_body(request: web.Request) -> dict[str, Any]:
    too_large = Refusal(413, "body_too_large", f"body: larger than {MAX_BODY} bytes", "body")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise too_large
    raw = await read_capped(request.content, MAX_BODY)
    if len(raw) > MAX_BODY:
        raise too_large
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise Refusal(
            400, "invalid_request", "body: not JSON: send a JSON object", "body"
        ) from None
    if not isinstance(data, dict):
        raise Refusal(400, "invalid_request", "body: must be a JSON object", "body")
    return data


def refusal_json(request: web.Request, exc: Refusal) -> web.Response:
    body: dict[str, Any] = {"error": exc.error, "message": exc.message}
    if exc.field is not None:
        body["field"] = exc.field
    return web.json_response({**body, "correlation_id": request[CID]}, status=exc.status)


def _api(operation: Callable[[web.Request, Actor], Awaitable[Any]], status: int = 200):
    """An operation as a JSON handler: its result as the body, a Refusal as the error body."""

    async def handler(request: web.Request, actor: Actor) -> web.StreamResponse:
        try:
            result = await operation(request, actor)
        except Refusal as exc:
            return refusal_json(request, exc)
        return web.json_response(result, status=status)

    return handler


def _audit(request: web.Request, actor: Actor) -> ops.Audit:
    return partial(audit_admin, request, actor)


def _id(request: web.Request) -> str:
    return request.match_info["conn_id"]


async def _list(request: web.Request, actor: Actor) -> dict[str, Any]:
    st = state(request)
    shown = [c for c in st.connections if actor.sees(c.settings.organization)]
    return {"connections": [await ops.describe(st, c) for c in shown]}


async def _create(request: web.Request, actor: Actor) -> dict[str, Any]:
    st = state(request)
    body = await read_body(request)
    audit = _audit(request, actor)
    conn = await ops.create(st, audit, actor.name, body, actor.organization)
    return await ops.describe(st, conn)


async def _get(request: web.Request, actor: Actor) -> dict[str, Any]:
    st = state(request)
    return await ops.describe(st, ops.found(st, _id(request)))


async def _update(request: web.Request, actor: Actor) -> dict[str, Any]:
    st = state(request)
    body = await read_body(request)
    audit = _audit(request, actor)
    conn = await ops.update(st, audit, actor.name, _id(request), body, actor.organization)
    return await ops.describe(st, conn)


async def _activate(request: web.Request, actor: Actor) -> dict[str, Any]:
    st = state(request)
    conn = await ops.activate(st, _audit(request, actor), actor.name, _id(request))
    return await ops.describe(st, conn)


async def _deactivate(request: web.Request, actor: Actor) -> dict[str, Any]:
    st = state(request)
    conn = await ops.deactivate(st, _audit(request, actor), actor.name, _id(request))
    return await ops.describe(st, conn)


async def _delete(request: web.Request, actor: Actor) -> dict[str, Any]:
    return await ops.delete(state(request), _audit(request, actor), _id(request))


def _rollover(step: str) -> Callable[[web.Request, Actor], Awaitable[Any]]:
    async def operation(request: web.Request, actor: Actor) -> dict[str, Any]:
        st = state(request)
        body = await read_body(request) if request.can_read_body else {}
        audit = _audit(request, actor)
        conn = await ops.rollover(st, audit, actor.name, _id(request), step, body)
        return await ops.describe(st, conn)

    return operation


async def _test(request: web.Request, actor: Actor) -> dict[str, Any]:
    return await ops.probe(state(request), _audit(request, actor), _id(request))


def add_routes(app: web.Application, base: str, guard: Guard) -> None:
    path = base + "/api/connections"
    one = path + "/{conn_id}"
    app.router.add_get(path, guard(_api(_list)))
    app.router.add_post(path, guard(_api(_create, status=201)))
    app.router.add_get(one, guard(_api(_get)))
    app.router.add_patch(one, guard(_api(_update)))
    app.router.add_delete(one, guard(_api(_delete)))
    app.router.add_post(one + "/activate", guard(_api(_activate)))
    app.router.add_post(one + "/deactivate", guard(_api(_deactivate)))
    app.router.add_post(one + "/test", guard(_api(_test)))
    for step in ("add", "promote", "retire"):
        app.router.add_post(f"{one}/sp-certificates/{step}", guard(_api(_rollover(step))))
