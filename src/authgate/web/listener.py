"""aiohttp's connection handler, with authgate's own answer to a request it cannot read.

aiohttp answers a request head it cannot parse by itself, and its default body
quotes the offending line. For an oversized `Cookie` header that line is the
HttpOnly session id: a script on the application's origin can add padding
cookies, fetch any page and read the id from the 400. Every answer made here
carries the status, a reason code and a correlation id, and never a byte of
the request or a library's message; the log gets the error's kind only, since
the message holds the same bytes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from authgate.web.client_info import correlation_id_from
from authgate.web.pages import Pages

log = logging.getLogger("authgate")

# aiohttp's per-line limit; a longer head line is refused as 431 (RFC 6585), like nginx does.
TOO_LARGE = 431


class QuietRequestHandler(RequestHandler):
    """One client connection, as aiohttp serves it, with our bodies for unreadable requests."""

    def __init__(self, manager: web.Server, pages: Pages | None, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._pages = pages

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started; the connection is closed instead")
        cid = correlation_id_from(request.headers, False)
        if status >= 500:
            log.error("unhandled error (correlation id %s)", cid, exc_info=exc)
            reason = "internal_error"
        else:
            log.info("unreadable request (correlation id %s): %s", cid, type(exc).__name__)
            status, reason = refusal(exc, status)
        response = self._answer(status, reason, cid)
        response.headers["X-Request-Id"] = cid
        response.headers["Cache-Control"] = "no-store"
        response.force_close()
        return response

    def _answer(self, status: int, reason: str, cid: str) -> web.Response:
        if self._pages is not None:
            return self._pages.error(status, reason, cid)
        return web.Response(status=status, text=f"{reason} (correlation id {cid})\n")


def refusal(exc: BaseException | None, status: int) -> tuple[int, str]:
    """The status and reason code for a request head aiohttp's parser refused."""
    if isinstance(exc, LineTooLong):
        return TOO_LARGE, "header_too_large"
    return status, "invalid_request"


class ConnectionHandlers:
    """The protocol factory for a listening socket: aiohttp's handler, with our error answers."""

    def __init__(self, server: web.Server, pages: Pages | None = None) -> None:
        self.server = server
        self._pages = pages
        self._loop = asyncio.get_running_loop()

    def __call__(self) -> RequestHandler:
        return QuietRequestHandler(self.server, self._pages, loop=self._loop, access_log=None)
