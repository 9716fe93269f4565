"""PATCH and write tolerance for what Entra ID and Okta actually send.

scim2-models already accepts Entra ID's capitalised `Add`/`Replace`/`Remove`,
`"active": "False"` strings (pydantic's lax booleans), path-less value objects
with dotted and extension-URN keys, `members` removal by value and
`members[value eq "..."]` paths. The policy below switches on the two
tolerances Entra ID needs (a `remove` carrying a value, an `add` to a filtered
path that matches nothing yet) and ignores attributes no schema declares,
such as the operation `name` Entra ID adds to membership changes.

What is left here is Okta's group rename, a path-less `replace` whose value
echoes the group's own read-only `id`.
"""

from __future__ import annotations

from typing import Any

from scim2_models import Context, PatchOp, ScimPolicy

POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)


def _operation(operation: Any, resource_id: str) -> Any:
    if not isinstance(operation, dict):
        return operation
    value = operation.get("value")
    if operation.get("path") is None and isinstance(value, dict) and value.get("id") == resource_id:
        operation = {**operation, "value": {k: v for k, v in value.items() if k != "id"}}
    return operation


def normalise(body: Any, resource_id: str) -> Any:
    """The body with Okta's echoed `id` dropped from path-less values; otherwise unchanged."""
    if not isinstance(body, dict) or not isinstance(body.get("Operations"), list):
        return body
    return {**body, "Operations": [_operation(op, resource_id) for op in body["Operations"]]}


def apply(model: Any, resource: Any, body: Any) -> bool:
    """Apply a PatchOp body to `resource` in place; True when anything changed."""
    with POLICY:
        patch = PatchOp[model].model_validate(
            normalise(body, resource.id), scim_ctx=Context.RESOURCE_PATCH_REQUEST
        )
        return bool(patch.patch(resource))
