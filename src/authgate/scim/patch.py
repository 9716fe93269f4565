"""PATCH and write tolerance for what Entra ID and Okta actually send.

scim2-models already accepts Entra ID's capitalised `Add`/`Replace`/`Remove`,
`"active": "False"` strings (pydantic's lax booleans), path-less value objects
with dotted and extension-URN keys, `members` removal by value and
`members[value eq "..."]` paths. The policy (`validation.POLICY`) switches on the two
tolerances Entra ID needs (a `remove` carrying a value, an `add` to a filtered
path that matches nothing yet) and ignores attributes no schema declares,
such as the operation `name` Entra ID adds to membership changes.

What is left here: Entra's removal of members by a value list whose entries
carry `"$ref": null`, Okta's group rename, a path-less `replace` whose value
echoes the group's own read-only `id`, and Entra's enterprise `manager`. RFC
7643 §4.3 makes it a complex attribute (`value`, `$ref`); Entra sends the
manager's id alone — `"manager": "<id>"`, `{"value": "<id>"}`, or in PATCH
with the path `urn:...:enterprise:2.0:User:manager` — and never a `$ref`,
which the schema requires. Each form becomes `{"value": id, "$ref":
"<base>/Users/<id>"}`, the manager being a user of this same SCIM service.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from scim2_models import Context, PatchOp

from authgate.scim.validation import validated

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user"
MANAGER = ENTERPRISE + ":manager"


def manager_value(value: Any, base: str) -> Any:
    """Entra's manager (an id, or `{"value": id}`) as the RFC complex value with its `$ref`."""
    if isinstance(value, str):
        value = {"value": value}
    if isinstance(value, dict) and "$ref" not in value:
        manager_id = value.get("value")
        if isinstance(manager_id, str) and manager_id:
            return {**value, "$ref": f"{base}/Users/{quote(manager_id, safe='')}"}
    return value


def _with_manager(extension: Any, base: str) -> Any:
    """The enterprise extension object with its `manager` in RFC form."""
    if not isinstance(extension, dict) or "manager" not in extension:
        return extension
    return {**extension, "manager": manager_value(extension["manager"], base)}


def user_body(body: Any, base: str) -> Any:
    """A User body (POST, PUT) with Entra's `manager` in RFC form."""
    if not isinstance(body, dict):
        return body
    return {k: _with_manager(v, base) if k.lower() == ENTERPRISE else v for k, v in body.items()}


def _manager_operation(operation: dict[str, Any], base: str) -> dict[str, Any]:
    """Entra's manager in an add or replace: by its URN path, or inside a path-less value.

    A new `manager.value` replaces the whole manager, so its `$ref` follows. A
    user has one manager, so a remove takes it away whatever value it names.
    """
    path = str(operation.get("path") or "").lower()
    if str(operation.get("op", "")).lower() == "remove":
        if path == MANAGER:
            return {k: v for k, v in operation.items() if k != "value"}
        return operation
    if "value" not in operation:
        return operation
    value = operation["value"]
    if path == MANAGER:
        return {**operation, "value": manager_value(value, base)}
    if path == MANAGER + ".value" and isinstance(value, str):
        manager = str(operation["path"])[: -len(".value")]
        return {**operation, "path": manager, "value": manager_value(value, base)}
    if path == ENTERPRISE:
        return {**operation, "value": _with_manager(value, base)}
    if not path and isinstance(value, dict):
        fixed = {k: manager_value(v, base) if k.lower() == MANAGER else v for k, v in value.items()}
        return {**operation, "value": user_body(fixed, base)}
    return operation


def _member_removals(operation: dict[str, Any]) -> list[Any] | None:
    """Entra's `remove members` with a value list, as one RFC `members[value eq ...]` each.

    The entries Entra sends carry `"$ref": null`, so matching them as whole
    objects against stored members (which have a `$ref`) would remove nothing.
    """
    value = operation.get("value")
    if (
        str(operation.get("op", "")).lower() != "remove"
        or str(operation.get("path", "")).lower() != "members"
        or not isinstance(value, list)
        or not all(isinstance(v, dict) and isinstance(v.get("value"), str) for v in value)
    ):
        return None
    return [{"op": "remove", "path": f"members[value eq {json.dumps(v['value'])}]"} for v in value]


def _operations(operation: Any, resource_id: str, base: str) -> list[Any]:
    if not isinstance(operation, dict):
        return [operation]
    removals = _member_removals(operation)
    if removals is not None:
        return removals
    operation = _manager_operation(operation, base)
    value = operation.get("value")
    if operation.get("path") is None and isinstance(value, dict) and value.get("id") == resource_id:
        operation = {**operation, "value": {k: v for k, v in value.items() if k != "id"}}
    return [operation]


def normalise(body: Any, resource_id: str, base: str) -> Any:
    """The body in RFC form: Entra's member removals and manager, Okta's echoed `id` dropped."""
    if not isinstance(body, dict) or not isinstance(body.get("Operations"), list):
        return body
    operations = [o for op in body["Operations"] for o in _operations(op, resource_id, base)]
    return {**body, "Operations": operations}


def apply(model: Any, resource: Any, body: Any, base: str) -> bool:
    """Apply a PatchOp body to `resource` in place; True when anything changed."""
    with validated():
        patch = PatchOp[model].model_validate(
            normalise(body, resource.id, base), scim_ctx=Context.RESOURCE_PATCH_REQUEST
        )
        return bool(patch.patch(resource))
