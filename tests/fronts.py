"""authgate behind the listener `authgate run` uses, served by either of its two front ends.

Production puts every connection through the fast path (`web/fastpath.py`),
which hands what it does not take to aiohttp's web layer. `FrontServer`
serves an app exactly so, for `aiohttp_client`; with `fast=False` the fast
path declines every request, so each is answered by aiohttp after the
handover, as production answers every unusual one. The proxy and /auth
suites run over both (the `serve` fixture), and `test_fronts.py` compares
their answers whole.
"""

from __future__ import annotations

import contextlib

from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from authgate.app import front_site
from authgate.web.decision import Endpoint
from authgate.web.fastpath import Front, Head
from tests.servers import free_port

FRONTS = ("fast-path", "aiohttp")


def _declines(head: Head) -> Endpoint | None:
    return None


class FrontServer(TestServer):
    """An app behind `front_site`, the production listener, for `aiohttp_client`."""

    def __init__(self, app: web.Application, fast: bool = True) -> None:
        super().__init__(app)
        self.fast = fast
        self.front: Front | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def started(self) -> bool:
        return self._stack is not None

    async def start_server(self, loop: object = None, **kwargs: object) -> None:
        if self._stack is not None:
            return
        self._stack = contextlib.AsyncExitStack()
        self.port = free_port()
        listen = f"{self.host}:{self.port}"
        self.front = await self._stack.enter_async_context(front_site(self.app, listen, False))
        self.fast_path(self.fast)
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")

    def fast_path(self, on: bool) -> None:
        """Let the fast path take what it takes, or hand every request to aiohttp."""
        assert self.front is not None
        if on:
            vars(self.front).pop("route", None)
        else:
            self.front.route = _declines  # type: ignore[method-assign]

    async def close(self) -> None:
        if self._stack is not None and not self._closed:
            await self._stack.aclose()
            self._root = None
            self._closed = True
