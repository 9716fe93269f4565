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
REASON_HEADER = "X-Authgate-Reason"
# aiohttp's own refusals (no such route, a method the route lacks, a body over the limit)
# under reason codes of their own, so they render like every other refusal.
HTTP_REASONS: dict[int, str] = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


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
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_refusal(request, exc)
    except AuthgateError as exc:
        return render_error(request, exc)
    except Exception:
        log.exception("unhandled error (correlation id %s)", request.get(CID))
        return render_error(request, AuthgateError())


def render_error(request: web.Request, exc: AuthgateError) -> web.Response:
    return error_response(state(request), request.headers, request.get(CID, "-"), exc)


def _http_refusal(request: web.Request, exc: web.HTTPException) -> web.Response:
    """The router's 404/405 (and any other HTTP error raised) as authgate's page or JSON.

    Only the status and the `Allow` list survive: aiohttp's text may name parts
    of the request, which an error answer never repeats.
    """
    fallback = "internal_error" if exc.status >= 500 else "invalid_request"
    reason = HTTP_REASONS.get(exc.status, fallback)
    response = refusal(state(request), request.headers, request.get(CID, "-"), exc.status, reason)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def error_response(
    st: State, headers: MultiMapping[str], cid: str, exc: AuthgateError
) -> web.Response:
    """The refusal as the caller can use it: a page for browsers, JSON for the rest."""
    if isinstance(exc, StoreUnavailable):
        st.metrics.store_errors.inc()
        log.error("session store unavailable (correlation id %s): %s", cid, exc.detail)
    elif exc.status >= 500:
        log.warning("%s (correlation id %s): %s", exc.reason, cid, exc.detail)
    if isinstance(exc, LoginStateError) and wants_html_from(headers):
        response = st.pages.render(
            "expired.html", status=exc.status, correlation_id=cid, retry_url=st.url("/login")
        )
        return _refusal_headers(response, exc.reason, cid)
    return refusal(st, headers, cid, exc.status, exc.reason)


def refusal(
    st: State, headers: MultiMapping[str], cid: str, status: int, reason: str
) -> web.Response:
    """A refusal's reason code and correlation id: a page for browsers, JSON for the rest."""
    if wants_html_from(headers):
        response = st.pages.error(status, reason, cid)
    else:
        response = web.json_response({"error": reason, "correlation_id": cid}, status=status)
    return _refusal_headers(response, reason, cid)


def _refusal_headers(response: web.Response, reason: str, cid: str) -> web.Response:
    """The reason in a header too, so a front proxy can pass it on (see conf/nginx/)."""
    response.headers[REASON_HEADER] = reason
    response.headers["X-Request-Id"] = cid
    response.headers["Cache-Control"] = "no-store"
    return response
