"""Reading a urlencoded form body without trusting its size, encoding or field count.

Every form authgate accepts (SAML bindings, the OIDC callback, the sign-out
confirmation), and the SAML SOAP binding's XML body, is read here, so the
limits are the same everywhere: nothing read past `limit`, no compressed
bodies, no repeated fields that two readers could resolve differently.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web

from authgate.errors import AuthgateError, ProtocolError

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 32


async def read_body(
    request: web.Request,
    limit: int,
    content_type: str,
    refuse: type[AuthgateError] = ProtocolError,
) -> bytes:
    """The raw body of a `content_type` request, never read past `limit`, never compressed."""
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise refuse("invalid_request", "compressed request bodies are not accepted")
    if request.content_type != content_type:
        raise refuse("invalid_request", f"expected {content_type}")
    too_large = f"the request body is larger than {limit} bytes"
    if request.content_length is not None and request.content_length > limit:
        raise refuse("invalid_request", too_large)
    body = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        body += chunk
        if len(body) > limit:
            raise refuse("invalid_request", too_large)
    return bytes(body)


async def read_form(
    request: web.Request, limit: int, refuse: type[AuthgateError] = ProtocolError
) -> dict[str, str]:
    """The form's fields; anything unusual is refused as `refuse("invalid_request")`."""
    body = await read_body(request, limit, FORM_TYPE, refuse)
    pairs = parse_qsl(
        body.decode("ascii", "replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS
    )
    names = [name for name, _ in pairs]
    if len(names) != len(set(names)):
        raise refuse("invalid_request", "a form field is repeated")
    return dict(pairs)


MULTIPART_TYPE = "multipart/form-data"


async def read_multipart(
    request: web.Request, limit: int, refuse: type[AuthgateError] = ProtocolError
) -> dict[str, str]:
    """A form with file uploads (admin pages): text fields and files, as text, up to `limit`.

    Files are read as UTF-8 text (metadata XML, CSV); the whole body stays
    under `limit` however it is split into parts.
    """
    if request.content_type == FORM_TYPE:
        return await read_form(request, limit, refuse)
    if request.content_type != MULTIPART_TYPE:
        raise refuse("invalid_request", f"expected {MULTIPART_TYPE}")
    too_large = f"the request body is larger than {limit} bytes"
    if request.content_length is not None and request.content_length > limit:
        raise refuse("invalid_request", too_large)
    reader = await request.multipart()
    fields: dict[str, str] = {}
    used = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None or part.name in fields:
            raise refuse("invalid_request", "a form field is nested, unnamed or repeated")
        if len(fields) >= MAX_FIELDS:
            raise refuse("invalid_request", "too many form fields")
        data = bytearray()
        while chunk := await part.read_chunk(65536):
            data += chunk
            used += len(chunk)
            if used > limit:
                raise refuse("invalid_request", too_large)
        fields[part.name] = data.decode("utf-8", "replace")
    return fields
