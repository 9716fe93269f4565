"""PATCH and write tolerance for what Entra ID and Okta actually send.

scim2-models already accepts Entra ID's capitalised `Add`/`Replace`/`Remove`,
`"active": "False"` strings (pydantic's lax booleans), path-less value objects
with dotted and extension-URN keys, `members` removal by value and
`members[value eq "..."]` paths. The policy below switches on the two
tolerances Entra ID needs (a `remove` carrying a value, an `add` to a filtered
path that matches nothing yet) and ignores attributes no schema declares,
such as the operation `name` Entra ID adds to membership changes.

What is left here: Entra's removal of members by a value list whose entries
carry `"$ref": null`, and Okta's group rename, a path-less `replace` whose
value echoes the group's own read-only `id`.
"""

from __future__ import annotations

import json
from typing import Any

from scim2_models import Context, PatchOp, ScimPolicy

POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)


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


def _operations(operation: Any, resource_id: str) -> list[Any]:
    if not isinstance(operation, dict):
        return [operation]
    removals = _member_removals(operation)
    if removals is not None:
        return removals
    value = operation.get("value")
    if operation.get("path") is None and isinstance(value, dict) and value.get("id") == resource_id:
        operation = {**operation, "value": {k: v for k, v in value.items() if k != "id"}}
    return [operation]


def normalise(body: Any, resource_id: str) -> Any:
    """The body in RFC form: Entra's member removals by value, Okta's echoed `id` dropped."""
    if not isinstance(body, dict) or not isinstance(body.get("Operations"), list):
        return body
    operations = [o for op in body["Operations"] for o in _operations(op, resource_id)]
    return {**body, "Operations": operations}


def apply(model: Any, resource: Any, body: Any) -> bool:
    """Apply a PatchOp body to `resource` in place; True when anything changed."""
    with POLICY:
        patch = PatchOp[model].model_validate(
            normalise(body, resource.id), scim_ctx=Context.RESOURCE_PATCH_REQUEST
        )
        return bool(patch.patch(resource))
