"""authgate's user and group records as SCIM resources, and back.

The SCIM attributes an IdP sent are kept on the user record as received (less
`password`, which is never stored, and the read-only `id`, `meta`, `groups`);
the fields authgate itself relies on — link key, userName, email, display
name, active — are derived from them on every write.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import replace
from typing import Any, Literal

from scim2_models import (
    Context,
    EnterpriseUser,
    Group,
    GroupMember,
    GroupMembership,
    Meta,
    User,
)

from authgate import users as store

UserResource = User[EnterpriseUser]
LinkAttribute = Literal["externalId", "userName"]
_DERIVED = ("id", "meta", "groups")


def _when(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def etag(document: dict[str, Any]) -> str:
    """A weak entity tag over everything but `meta`, the same on every replica."""
    body = {k: v for k, v in document.items() if k != "meta"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return f'W/"{digest[:20]}"'


def _meta(kind: str, location: str, created: float, modified: float | None) -> Meta:
    return Meta(
        resource_type=kind,
        created=_when(created),
        last_modified=_when(modified or created),
        location=location,
    )


def _stamp(resource: Any) -> Any:
    assert resource.meta is not None
    dumped = resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    resource.meta.version = etag(dumped)
    return resource


def _synthesised(user: store.User) -> dict[str, Any]:
    """The SCIM view of a user that came from a login or a CSV file rather than SCIM."""
    data: dict[str, Any] = {
        "schemas": [str(User.__schema__)],
        "userName": user.username or user.email or user.external_id,
        "externalId": user.external_id,
    }
    if user.display_name:
        data["displayName"] = user.display_name
    if user.email:
        data["emails"] = [{"value": user.email, "type": "work", "primary": True}]
    return data


def user_resource(user: store.User, groups: list[store.Group], base: str) -> UserResource:
    """The SCIM user; `active` is left out only when the IdP removed it and the user is active."""
    data = dict(user.attributes) or _synthesised(user)
    if not user.active or "active" in data or not user.attributes:
        data["active"] = user.active
    resource = UserResource.model_validate(data)
    resource.id = user.id
    resource.groups = [
        GroupMembership(value=g.id, display=g.display_name, ref=f"{base}/Groups/{g.id}")
        for g in groups
    ] or None
    resource.meta = _meta("User", f"{base}/Users/{user.id}", user.created_at, user.updated_at)
    return _stamp(resource)


def _primary_email(resource: UserResource) -> str | None:
    emails = [e for e in resource.emails or [] if e.value]
    chosen = (
        next((e for e in emails if e.primary), None)
        or next((e for e in emails if e.type == "work"), None)
        or (emails[0] if emails else None)
    )
    return str(chosen.value) if chosen else None


def _display_name(resource: UserResource) -> str | None:
    if resource.display_name:
        return resource.display_name
    name = resource.name
    if name is None:
        return None
    joined = " ".join(p for p in (name.given_name, name.family_name) if p)
    return name.formatted or joined or None


def stored_attributes(resource: UserResource) -> dict[str, Any]:
    """What is kept of a SCIM user: the response view (never `password`) less derived parts."""
    dumped = resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    return {k: v for k, v in dumped.items() if k not in _DERIVED}


def user_fields(resource: UserResource, link: LinkAttribute, active: bool = True) -> dict[str, Any]:
    """The user-record fields a SCIM user determines; no `active` keeps `active` as it was."""
    username = resource.user_name
    link_value = resource.external_id if link == "externalId" else username
    return {
        "external_id": link_value or username,
        "username": username,
        "email": _primary_email(resource),
        "display_name": _display_name(resource),
        "active": active if resource.active is None else bool(resource.active),
        "attributes": stored_attributes(resource),
    }


def updated_user(user: store.User, resource: UserResource, link: LinkAttribute) -> store.User:
    return replace(user, **user_fields(resource, link, user.active))


def group_resource(group: store.Group, member_ids: set[str], base: str) -> Group:
    resource = Group(
        id=group.id,
        display_name=group.display_name,
        external_id=group.external_id,
        members=[
            GroupMember(
                value=uid,
                ref=f"{base}/Users/{uid}",
                type="User",
                display=group.member_display.get(uid),
            )
            for uid in sorted(member_ids)
        ]
        if member_ids
        else None,
        meta=_meta("Group", f"{base}/Groups/{group.id}", group.created_at, group.updated_at),
    )
    return _stamp(resource)


def members_of(resource: Group) -> dict[str, str | None]:
    """Member id -> display name, as the client sent them."""
    return {m.value: m.display for m in resource.members or [] if m.value}
