"""The outer steps of every request: request id and client info, then error rendering."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiMapping

from authgate.errors import AuthgateError, LoginStateError, StoreUnavailable
from authgate.web.client_info import CID, CLIENT, correlation_id
from authgate.web.state import State, state

log = logging.getLogger("authgate")


def wants_html(request: web.Request) -> bool:
    return wants_html_from(request.headers)


def wants_html_from(headers: MultiMapping[str]) -> bool:
    """A top-level browser navigation, as opposed to an API or XHR call."""
    if headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return False
    if headers.get("Sec-Fetch-Mode") == "navigate":
        return True
    return "text/html" in headers.get("Accept", "")


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    st = state(request)
    info = st.trusted.client_info(request)
    request[CLIENT] = info
    cid = correlation_id(request, info.via_trusted_proxy)
    request[CID] = cid
    response = await handler(request)
    if not response.prepared:
        response.headers["X-Request-Id"] = cid
    return response


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal becomes a page or JSON with its reason and correlation id, never a trace."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except AuthgateError as exc:
        return render_error(request, exc)
    except Exception:
        log.exception("unhandled error (correlation id %s)", request.get(CID))
        return render_error(request, AuthgateError())


def render_error(request: web.Request, exc: AuthgateError) -> web.Response:
    return error_response(state(request), request.headers, request.get(CID, "-"), exc)


def error_response(
    st: State, headers: MultiMapping[str], cid: str, exc: AuthgateError
) -> web.Response:
    """The refusal as the caller can use it: a page for browsers, JSON for the rest."""
    if isinstance(exc, StoreUnavailable):
        st.metrics.store_errors.inc()
        log.error("session store unavailable (correlation id %s): %s", cid, exc.detail)
    elif exc.status >= 500:
        log.warning("%s (correlation id %s): %s", exc.reason, cid, exc.detail)
    if not wants_html_from(headers):
        response = web.json_response(
            {"error": exc.reason, "correlation_id": cid}, status=exc.status
        )
    elif isinstance(exc, LoginStateError):
        response = st.pages.render(
            "expired.html", status=exc.status, correlation_id=cid, retry_url=st.url("/login")
        )
    else:
        response = st.pages.error(exc.status, exc.reason, cid)
    response.headers["X-Request-Id"] = cid
    response.headers["Cache-Control"] = "no-store"
    return response
