"""What every SCIM handler shares: the context, the token of the request, JSON in and out."""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from scim2_models import (
    InvalidSyntaxException,
    PayloadTooLargeException,
    ResourceType,
    Schema,
    ServiceProviderConfig,
)

from authgate.audit import AuditLog
from authgate.retirement import Lifecycle
from authgate.scim.tokens import ScimTokens
from authgate.settings import ScimSettings, Settings
from authgate.tokens import TokenInfo
from authgate.users import UserStore
from authgate.web.client_info import CID, CLIENT

SCIM_JSON = "application/scim+json"
# A SCIM resource nests four levels at most (PATCH value -> attribute -> sub-attribute list).
MAX_DEPTH = 32


@dataclass(frozen=True)
class ScimContext:
    settings: Settings
    # The connections in force now (config file and admin-made): a token of any other is refused.
    connections: Container[str]
    users: UserStore
    lifecycle: Lifecycle
    tokens: ScimTokens
    audit: AuditLog
    base: str
    config: ServiceProviderConfig
    resource_types: list[ResourceType]
    schemas: list[Schema]

    @property
    def options(self) -> ScimSettings:
        return self.settings.scim


SCIM: web.AppKey[ScimContext] = web.AppKey("authgate_scim", ScimContext)
TOKEN: web.RequestKey[TokenInfo] = web.RequestKey("authgate_scim_token", TokenInfo)


def scim(request: web.Request) -> ScimContext:
    return request.app[SCIM]


def respond(
    document: dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A SCIM answer: `application/scim+json`, or no body at all for 204/304."""
    if document is None:
        return web.Response(status=status, headers=headers)
    body = json.dumps(document, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type=SCIM_JSON, headers=headers)


def audit_fields(request: web.Request) -> dict[str, Any]:
    token = request.get(TOKEN)
    return {
        "connection": token.connection if token else None,
        "token_id": token.id if token else None,
        "ip": request[CLIENT].ip if CLIENT in request else None,
        "correlation_id": request.get(CID),
    }


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, refused above `scim.max_body_size`."""
    limit = scim(request).options.max_body_size
    if (request.content_length or 0) > limit:
        raise PayloadTooLargeException(detail=f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeException(detail=f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    try:
        document = json.loads(b"".join(chunks))
    except json.JSONDecodeError as exc:
        detail = f"the body is not valid JSON (line {exc.lineno}, column {exc.colno})"
        raise InvalidSyntaxException(detail=detail) from None
    except (UnicodeDecodeError, RecursionError):
        raise InvalidSyntaxException(detail="the body is not UTF-8 JSON of sane depth") from None
    if _depth(document) > MAX_DEPTH:
        raise InvalidSyntaxException(detail=f"the body nests deeper than {MAX_DEPTH} levels")
    return document


def _depth(document: Any) -> int:
    """Nesting depth, found without recursion: every later step may recurse over the body."""
    deepest, pending = 0, [(document, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            pending.extend((child, depth + 1) for child in children)
    return deepest
