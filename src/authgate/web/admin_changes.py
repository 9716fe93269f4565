"""The bodies of admin API writes: parsed strictly, and refused with a sentence of our own.

Unknown fields are refused (a typo must not be a silent no-op), roles are
names that survive the comma-joined `X-Roles` header, and no refusal shows
the parser's or pydantic's wording.
"""

from __future__ import annotations

import json
from typing import Annotated, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from pydantic_core import ErrorDetails

from authgate.bodies import read_capped

MAX_BODY = 64 * 1024
M = TypeVar("M", bound=BaseModel)
ROLE_RULE = "1-64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"

RoleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]


class UserChange(BaseModel):
    """`PATCH users/{id}`: the user's own roles (beside the mapped ones), and whether active."""

    model_config = ConfigDict(extra="forbid", strict=True)

    roles: list[RoleName] | None = None
    active: bool | None = None


class TokenRequest(BaseModel):
    """`POST connections/{id}/scim-tokens`: a note to tell tokens apart by."""

    model_config = ConfigDict(extra="forbid", strict=True)

    description: Annotated[str, StringConstraints(max_length=200)] = ""


def _where(location: tuple[int | str, ...]) -> str:
    """`roles[1]`, `active`: the field as the admin wrote it."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location).lstrip(".")


def _problem(error: ErrorDetails) -> str:
    where, kind = _where(error["loc"]), error["type"]
    if kind == "extra_forbidden":
        return f"{where}: not a field of this request"
    if where == "description":
        return "description: expected text of at most 200 characters"
    if where.startswith("roles["):
        return f"{where}: a role is {ROLE_RULE}"
    if where == "roles":
        return "roles: expected a list of role names"
    if where == "active":
        return "active: expected true or false"
    return f"{where}: not a usable value"


async def read_user_change(request: web.Request) -> UserChange | str:
    """The change asked for, or the sentence that says what is wrong with it."""
    return await _read(request, UserChange, '{"roles": ["editor"]}')


async def read_token_request(request: web.Request) -> TokenRequest | str:
    """An empty body asks for a token without a description."""
    if request.content_length == 0 or not request.can_read_body:
        return TokenRequest()
    return await _read(request, TokenRequest, '{"description": "Entra provisioning"}')


async def _read(request: web.Request, model: type[M], example: str) -> M | str:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return f"the body is larger than {MAX_BODY} bytes"
    raw = await read_capped(request.content, MAX_BODY)
    if len(raw) > MAX_BODY:
        return f"the body is larger than {MAX_BODY} bytes"
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return f"the body is not JSON: send an object such as {example}"
    if not isinstance(data, dict):
        return f"the body must be a JSON object such as {example}"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return _problem(exc.errors()[0])
