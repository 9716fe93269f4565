"""The SCIM sub-application: bearer tokens, SCIM error bodies, discovery endpoints, routes.

Mounted at `scim.path` (default `{prefix}/scim/v2`; the IdP's "Tenant URL"). Every endpoint needs a
token made with `authgate scim token create`; a token sees and changes only the
users and groups of its own connection. Every failure is a SCIM Error body
(`urn:ietf:params:scim:api:messages:2.0:Error`) with the right status and
`scimType`, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    Error,
    ETag,
    Filter,
    Group,
    ListResponse,
    Meta,
    NotFoundException,
    NotImplementedException,
    Patch,
    ResourceType,
    Schema,
    SCIMException,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
    UnauthorizedException,
    UniquenessException,
    User,
)

from authgate.audit import AuditLog
from authgate.errors import AuthgateError, PolicyDenied, StoreUnavailable
from authgate.retirement import Lifecycle
from authgate.scim import handlers
from authgate.scim.http import SCIM, TOKEN, ScimContext, audit_fields, respond, scim
from authgate.scim.resources import UserResource
from authgate.scim.tokens import ScimTokens
from authgate.scim.validation import REFUSED, worded
from authgate.settings import ScimSettings, Settings
from authgate.users import UserStore
from authgate.web.client_info import CID

log = logging.getLogger("authgate.scim")
REALM = 'Bearer realm="authgate-scim"'
# The router's refusals in authgate's words: aiohttp's text, and the request's path, stay out.
ROUTING = {404: "no such SCIM endpoint", 405: "this SCIM endpoint does not take this method"}
# The value itself stays out of the answer: no error body repeats request bytes.
UNIQUE = "a value that must be unique (userName, email or externalId) belongs to another user"


def error_response(error: Error) -> web.Response:
    status = int(error.status or 500)
    headers = {"WWW-Authenticate": REALM} if status == 401 else None
    return respond(error.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE), status, headers)


def _translate(exc: Exception, request: web.Request) -> Error:
    """Any failure as the SCIM Error a client can act on; details of 5xx stay in the log.

    No body carries a library's text: scim2-models' refusals are worded by
    `validation`, the router's here.
    """
    if isinstance(exc, SCIMException):
        return exc.to_error()
    if isinstance(exc, ValidationError):
        return worded(exc).to_error()
    if isinstance(exc, PolicyDenied) and exc.reason == "email_conflict":
        return UniquenessException(detail=UNIQUE).to_error()
    if isinstance(exc, StoreUnavailable):
        log.error("SCIM: user store unavailable: %s", exc.detail)
        return Error(status=503, detail="the user store is unreachable; retry later")
    if isinstance(exc, AuthgateError):
        return Error(status=exc.status, detail=exc.reason)
    if isinstance(exc, web.HTTPException):
        return Error(status=exc.status, detail=ROUTING.get(exc.status, REFUSED))
    log.exception("SCIM: unhandled error (correlation id %s)", request.get(CID))
    return Error(status=500, detail=f"internal error (correlation id {request.get(CID, '-')})")


@web.middleware
async def scim_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        return error_response(_translate(exc, request))


@web.middleware
async def bearer_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only a known token of a configured connection gets through."""
    ctx = scim(request)
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    info = await ctx.tokens.verify(secret.strip()) if scheme.lower() == "bearer" else None
    if info is None or info.connection not in ctx.connections:
        ctx.audit.emit("scim.auth.failed", path=request.path, **audit_fields(request))
        raise UnauthorizedException(detail="a valid SCIM bearer token is required")
    request[TOKEN] = info
    return await handler(request)


def _service_provider_config(options: ScimSettings, base: str) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=options.max_page_size),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=True),
        etag=ETag(supported=True),
        authentication_schemes=[
            AuthenticationScheme(
                type="oauthbearertoken",
                name="OAuth Bearer Token",
                description="A token made with `authgate scim token create`",
                spec_uri="https://www.rfc-editor.org/info/rfc6750",
                primary=True,
            )
        ],
        meta=Meta(resource_type="ServiceProviderConfig", location=f"{base}/ServiceProviderConfig"),
    )


def _discovery(base: str) -> tuple[list[ResourceType], list[Schema]]:
    provider = ScimProvider(
        models=[User, EnterpriseUser, Group],
        resource_types=[
            ResourceType.from_resource(UserResource),
            ResourceType.from_resource(Group),
        ],
    )
    resource_types = list(provider.resource_types)
    for rt in resource_types:
        rt.meta = Meta(resource_type="ResourceType", location=f"{base}/ResourceTypes/{rt.id}")
    schemas = list(provider.schemas)
    for schema in schemas:
        schema.meta = Meta(resource_type="Schema", location=f"{base}/Schemas/{schema.id}")
    return resource_types, schemas


def _listing(items: list[Any], model: Any) -> dict[str, Any]:
    response = ListResponse[model](
        total_results=len(items), start_index=1, items_per_page=len(items), resources=items
    )
    return response.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)


async def service_provider_config(request: web.Request) -> web.Response:
    config = scim(request).config
    return respond(config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


async def resource_types(request: web.Request) -> web.Response:
    return respond(_listing(scim(request).resource_types, ResourceType))


async def resource_type(request: web.Request) -> web.Response:
    wanted = request.match_info["id"]
    found = next((rt for rt in scim(request).resource_types if rt.id == wanted), None)
    if found is None:
        raise NotFoundException(detail="no such resource type")
    return respond(found.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


async def schemas(request: web.Request) -> web.Response:
    return respond(_listing(scim(request).schemas, Schema))


async def schema(request: web.Request) -> web.Response:
    wanted = request.match_info["id"]
    found = next((s for s in scim(request).schemas if s.id == wanted), None)
    if found is None:
        raise NotFoundException(detail="no such schema")
    return respond(found.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


async def search_everything(request: web.Request) -> web.Response:
    raise NotImplementedException(
        detail="searching several resource types at once is not supported;"
        " use /Users/.search or /Groups/.search"
    )


def create_scim_app(
    settings: Settings,
    connections: Container[str],
    users: UserStore,
    lifecycle: Lifecycle,
    tokens: ScimTokens,
    audit: AuditLog,
) -> web.Application:
    """The sub-application; mount it at `settings.scim_path` before any catch-all route."""
    base = settings.scim_url
    types, known_schemas = _discovery(base)
    app = web.Application(middlewares=[scim_errors, bearer_token])
    app[SCIM] = ScimContext(
        settings=settings,
        connections=connections,
        users=users,
        lifecycle=lifecycle,
        tokens=tokens,
        audit=audit,
        base=base,
        config=_service_provider_config(settings.scim, base),
        resource_types=types,
        schemas=known_schemas,
    )
    handlers.add_routes(app.router)
    app.router.add_get("/ServiceProviderConfig", service_provider_config)
    app.router.add_get("/ResourceTypes", resource_types)
    app.router.add_get("/ResourceTypes/{id}", resource_type)
    app.router.add_get("/Schemas", schemas)
    app.router.add_get("/Schemas/{id}", schema)
    app.router.add_post("/.search", search_everything)
    return app
