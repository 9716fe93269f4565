"""/Users and /Groups: create, read, list, replace (PUT), patch, delete.

A token only ever reaches the users and groups of its own connection; any
other id is a 404. Deactivating (`active: false`, also Entra ID's `"False"`)
or deleting a user revokes every session of that user at once, and so does
removing a user from a group, since its roles were computed from membership.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from aiohttp import web
from scim2_models import (
    Context,
    Group,
    InvalidValueException,
    ListResponse,
    NotFoundException,
    PreconditionFailedException,
    ResponseParameters,
    SearchRequest,
)

from authgate import users as store
from authgate.scim import patch
from authgate.scim.filters import equality, search_request
from authgate.scim.http import TOKEN, ScimContext, audit_fields, read_json, respond, scim
from authgate.scim.resources import (
    UserResource,
    group_resource,
    members_of,
    updated_user,
    user_fields,
    user_resource,
)
from authgate.scim.validation import validated


def _connection(request: web.Request) -> str:
    return request[TOKEN].connection


def _selection(request: web.Request, model: Any) -> ResponseParameters[Any] | None:
    """The `attributes` / `excludedAttributes` query parameters, e.g. Entra's `members`."""
    names = ("attributes", "excludedAttributes")
    wanted = {k: request.query[k] for k in names if k in request.query}
    if not wanted:
        return None
    with validated():
        return ResponseParameters[model].model_validate(wanted)


def _single(request: web.Request, resource: Any, status: int = 200) -> web.Response:
    """One resource with its ETag (and Location when created); 304 when If-None-Match hits."""
    version = resource.meta.version
    headers = {"ETag": version}
    if status == 201:
        headers["Location"] = resource.meta.location
    if request.method == "GET" and version in _tags(request.headers.get("If-None-Match")):
        return respond(None, 304, headers)
    document = resource.model_dump(
        scim_ctx=Context.RESOURCE_QUERY_RESPONSE,
        response_parameters=_selection(request, type(resource)),
    )
    return respond(document, status, headers)


def _tags(header: str | None) -> set[str]:
    return {t.strip() for t in (header or "").split(",") if t.strip()}


def _check_if_match(request: web.Request, resource: Any) -> None:
    wanted = _tags(request.headers.get("If-Match"))
    if wanted and "*" not in wanted and resource.meta.version not in wanted:
        raise PreconditionFailedException(detail="the resource changed since it was read (ETag)")


def _window(search: SearchRequest[Any], items: list[Any]) -> list[Any]:
    start = search.start_index_0 or 0
    assert search.count is not None
    return items[start : start + search.count]


def _page(search: SearchRequest[Any], page: list[Any], total: int, model: Any) -> web.Response:
    response = ListResponse[model](
        total_results=total,
        start_index=(search.start_index_0 or 0) + 1,
        items_per_page=len(page),
        resources=page,
    )
    document = response.model_dump(scim_ctx=Context.SEARCH_RESPONSE, response_parameters=search)
    document.setdefault("Resources", [])
    return respond(document)


def _matching(search: SearchRequest[Any], views: list[Any]) -> list[Any]:
    """The resources the filter selects, in the order asked for."""
    with validated():
        return search.sort([v for v in views if search.filter is None or search.filter.match(v)])


async def _query(request: web.Request) -> dict[str, Any]:
    if request.method == "POST":
        body = await read_json(request)
        return body if isinstance(body, dict) else {}
    return dict(request.query)


# Users


async def _own_user(ctx: ScimContext, connection: str, user_id: str) -> store.User:
    user = await ctx.users.get(user_id)
    if user is None or user.connection != connection:
        raise NotFoundException(detail="no such user at this connection")
    return user


async def _user_view(ctx: ScimContext, user: store.User) -> UserResource:
    return user_resource(user, await ctx.users.groups_of(user.id), ctx.base)


async def _user_candidates(
    ctx: ScimContext, connection: str, request: SearchRequest[Any]
) -> list[store.User]:
    """Users the filter can match: an index lookup for plain equality, else all of them."""
    lookup = equality(request)
    found: store.User | None
    if lookup and lookup[0] == "username":
        found = await ctx.users.by_username(connection, lookup[1])
    elif lookup and lookup[0] == "externalid" and ctx.options.link_attribute == "externalId":
        found = await ctx.users.by_link(connection, lookup[1])
    elif lookup and lookup[0] == "id":
        found = await ctx.users.get(lookup[1])
    else:
        return await ctx.users.list_users(connection)
    return [found] if found is not None and found.connection == connection else []


async def list_users(request: web.Request) -> web.Response:
    ctx, connection = scim(request), _connection(request)
    search = search_request(UserResource, await _query(request), ctx.options.max_page_size)
    users = await _user_candidates(ctx, connection, search)
    if search.filter is None and search.sort_by is None:
        page = [await _user_view(ctx, u) for u in _window(search, users)]
        return _page(search, page, len(users), UserResource)
    views = [await _user_view(ctx, u) for u in users]
    matched = _matching(search, views)
    return _page(search, _window(search, matched), len(matched), UserResource)


async def create_user(request: web.Request) -> web.Response:
    ctx, connection = scim(request), _connection(request)
    body = patch.user_body(await read_json(request), ctx.base)
    with validated():
        resource = UserResource.model_validate(body, scim_ctx=Context.RESOURCE_CREATION_REQUEST)
    fields = user_fields(resource, ctx.options.link_attribute)
    user = await ctx.users.create(connection, source="scim", **fields)
    fields_out = audit_fields(request)
    ctx.audit.emit("user.provisioned", user_id=user.id, email=user.email, via="scim", **fields_out)
    ctx.audit.emit("scim.user.created", user_id=user.id, user_name=user.username, **fields_out)
    return _single(request, await _user_view(ctx, user), 201)


async def get_user(request: web.Request) -> web.Response:
    ctx = scim(request)
    user = await _own_user(ctx, _connection(request), request.match_info["id"])
    return _single(request, await _user_view(ctx, user))


async def _save_user(
    request: web.Request, current: store.User, resource: UserResource
) -> store.User:
    """Store the new state; a user who becomes inactive loses every session at once."""
    ctx = scim(request)
    wanted = updated_user(current, resource, ctx.options.link_attribute)
    if current.retired:
        wanted = replace(wanted, active=False)
    saved = await ctx.users.update(current, wanted)
    fields = audit_fields(request)
    ctx.audit.emit("user.updated", user_id=saved.id, email=saved.email, via="scim", **fields)
    if current.active and not saved.active:
        ctx.audit.emit("scim.user.deactivated", user_id=saved.id, **fields)
        await ctx.lifecycle.revoke_sessions(saved, "scim_deactivated", **_without_conn(fields))
    else:
        ctx.audit.emit("scim.user.updated", user_id=saved.id, active=saved.active, **fields)
    return saved


def _without_conn(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "connection"}


async def replace_user(request: web.Request) -> web.Response:
    ctx = scim(request)
    current = await _own_user(ctx, _connection(request), request.match_info["id"])
    original = await _user_view(ctx, current)
    _check_if_match(request, original)
    body = patch.user_body(await read_json(request), ctx.base)
    with validated():
        resource = UserResource.model_validate(body, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
        resource.replace(original)
    saved = await _save_user(request, current, resource)
    return _single(request, await _user_view(ctx, saved))


async def patch_user(request: web.Request) -> web.Response:
    ctx = scim(request)
    current = await _own_user(ctx, _connection(request), request.match_info["id"])
    resource = await _user_view(ctx, current)
    _check_if_match(request, resource)
    if patch.apply(UserResource, resource, await read_json(request), ctx.base):
        current = await _save_user(request, current, resource)
    return _single(request, await _user_view(ctx, current))


async def delete_user(request: web.Request) -> web.Response:
    ctx = scim(request)
    user = await _own_user(ctx, _connection(request), request.match_info["id"])
    _check_if_match(request, await _user_view(ctx, user))
    fields = audit_fields(request)
    await ctx.lifecycle.delete(user, "scim_deleted", **_without_conn(fields))
    ctx.audit.emit("scim.user.deleted", user_id=user.id, email=user.email, **fields)
    return respond(None, 204)


# Groups


async def _own_group(ctx: ScimContext, connection: str, group_id: str) -> store.Group:
    group = await ctx.users.get_group(group_id)
    if group is None or group.connection != connection:
        raise NotFoundException(detail="no such group at this connection")
    return group


async def _group_view(ctx: ScimContext, group: store.Group) -> Group:
    return group_resource(group, await ctx.users.members(group.id), ctx.base)


async def _check_members(ctx: ScimContext, connection: str, ids: set[str]) -> None:
    for user_id in sorted(ids):
        user = await ctx.users.get(user_id)
        if user is None or user.connection != connection:
            raise InvalidValueException(detail="a member is not a user of this connection")


async def _set_members(
    request: web.Request, group: store.Group, members: dict[str, str | None]
) -> None:
    """Apply a membership change; removed members' sessions end, their roles came from it."""
    ctx, connection = scim(request), _connection(request)
    current, wanted = await ctx.users.members(group.id), set(members)
    added, removed = wanted - current, current - wanted
    await _check_members(ctx, connection, added)
    display = {uid: name for uid, name in members.items() if name}
    if display != group.member_display:
        await ctx.users.save_group(replace(group, member_display=display))
    await ctx.users.add_members(group.id, added)
    await ctx.users.remove_members(group.id, removed)
    if not added and not removed:
        return
    fields = audit_fields(request)
    ctx.audit.emit(
        "scim.group.members_changed",
        group_id=group.id,
        added=sorted(added),
        removed=sorted(removed),
        **fields,
    )
    for user_id in sorted(removed):
        user = await ctx.users.get(user_id)
        if user is not None:
            await ctx.lifecycle.revoke_sessions(
                user, "scim_group_membership_removed", group_id=group.id, **_without_conn(fields)
            )


async def list_groups(request: web.Request) -> web.Response:
    ctx, connection = scim(request), _connection(request)
    search = search_request(Group, await _query(request), ctx.options.max_page_size)
    views = [await _group_view(ctx, g) for g in await ctx.users.list_groups(connection)]
    matched = _matching(search, views)
    return _page(search, _window(search, matched), len(matched), Group)


async def create_group(request: web.Request) -> web.Response:
    ctx, connection = scim(request), _connection(request)
    body = await read_json(request)
    with validated():
        resource = Group.model_validate(body, scim_ctx=Context.RESOURCE_CREATION_REQUEST)
    wanted = members_of(resource)
    await _check_members(ctx, connection, set(wanted))
    group = await ctx.users.create_group(
        connection, resource.display_name or "", resource.external_id
    )
    ctx.audit.emit(
        "scim.group.created", group_id=group.id, name=group.display_name, **audit_fields(request)
    )
    await _set_members(request, group, wanted)
    return _single(request, await _group_view(ctx, group), 201)


async def get_group(request: web.Request) -> web.Response:
    ctx = scim(request)
    group = await _own_group(ctx, _connection(request), request.match_info["id"])
    return _single(request, await _group_view(ctx, group))


async def _save_group(request: web.Request, group: store.Group, resource: Group) -> store.Group:
    ctx = scim(request)
    updated = replace(
        group,
        display_name=resource.display_name or group.display_name,
        external_id=resource.external_id,
        updated_at=time.time(),
    )
    await ctx.users.save_group(updated)
    ctx.audit.emit(
        "scim.group.updated", group_id=group.id, name=updated.display_name, **audit_fields(request)
    )
    await _set_members(request, updated, members_of(resource))
    return updated


async def replace_group(request: web.Request) -> web.Response:
    ctx = scim(request)
    group = await _own_group(ctx, _connection(request), request.match_info["id"])
    original = await _group_view(ctx, group)
    _check_if_match(request, original)
    body = await read_json(request)
    with validated():
        resource = Group.model_validate(body, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
        resource.replace(original)
    saved = await _save_group(request, group, resource)
    return _single(request, await _group_view(ctx, saved))


async def patch_group(request: web.Request) -> web.Response:
    """204 as Entra ID recommends: echoing every member of a large group helps nobody."""
    ctx = scim(request)
    group = await _own_group(ctx, _connection(request), request.match_info["id"])
    resource = await _group_view(ctx, group)
    _check_if_match(request, resource)
    if patch.apply(Group, resource, await read_json(request), ctx.base):
        group = await _save_group(request, group, resource)
    return respond(None, 204, {"ETag": (await _group_view(ctx, group)).meta.version})


async def delete_group(request: web.Request) -> web.Response:
    ctx = scim(request)
    group = await _own_group(ctx, _connection(request), request.match_info["id"])
    _check_if_match(request, await _group_view(ctx, group))
    await _set_members(request, group, {})
    await ctx.users.delete_group(group)
    ctx.audit.emit(
        "scim.group.deleted", group_id=group.id, name=group.display_name, **audit_fields(request)
    )
    return respond(None, 204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/Users", list_users)
    router.add_post("/Users", create_user)
    router.add_post("/Users/.search", list_users)
    router.add_get("/Users/{id}", get_user)
    router.add_put("/Users/{id}", replace_user)
    router.add_patch("/Users/{id}", patch_user)
    router.add_delete("/Users/{id}", delete_user)
    router.add_get("/Groups", list_groups)
    router.add_post("/Groups", create_group)
    router.add_post("/Groups/.search", list_groups)
    router.add_get("/Groups/{id}", get_group)
    router.add_put("/Groups/{id}", replace_group)
    router.add_patch("/Groups/{id}", patch_group)
    router.add_delete("/Groups/{id}", delete_group)
