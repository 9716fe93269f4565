"""Pages and log lines of the development IdP, every one of them marked as such.

Nobody should mistake this IdP for a real one: each page carries a banner and
a title saying so, and each log line starts with the same warning.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import MutableMapping
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

MARK = "DEVELOPMENT IdP (not for production)"
AUTO_SUBMIT = 'document.getElementById("post").submit();'
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(AUTO_SUBMIT.encode()).digest()).decode()
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
    " form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'"
)


class MarkedLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every message, so a development IdP line can never pass for authgate's own."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"{MARK}: {msg}", kwargs


log = MarkedLog(logging.getLogger("authgate.devidp"), {})


class Pages:
    def __init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("authgate.devidp", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        html = self._env.get_template(template).render(mark=MARK, **context)
        response = web.Response(text=html, status=status, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def message(self, heading: str, text: str, status: int = 200) -> web.Response:
        return self.render("message.html", status=status, heading=heading, text=text)

    def auto_post(self, url: str, fields: dict[str, str], what: str) -> web.Response:
        """An HTTP-POST binding page; its one inline script is allowed by hash, nothing else."""
        response = self.render(
            "post.html",
            url=url,
            fields=sorted(fields.items()),
            what=what,
            script=Markup(AUTO_SUBMIT),  # noqa: S704 - a constant, hashed into the CSP below
        )
        response.headers["Content-Security-Policy"] = f"{_CSP}; script-src 'sha256-{_SCRIPT_HASH}'"
        return response
