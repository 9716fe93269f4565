"""Wiring of provisioning into the application: SCIM sub-app, connection retirement, group sync.

At start-up the connections that left the config are retired (after the admin
safety check); each directory sync configuration then runs every interval in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from authgate.directory_sync import DirectorySync
from authgate.retirement import Lifecycle, reconcile_connections
from authgate.scim.app import create_scim_app
from authgate.scim.tokens import ScimTokens
from authgate.web.state import State


def lifecycle_of(st: State) -> Lifecycle:
    return Lifecycle(st.users, st.sessions, st.audit, ScimTokens(st.kv))


def _background(st: State, force_retire: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def background(app: web.Application) -> AsyncIterator[None]:
        lifecycle = lifecycle_of(st)
        await reconcile_connections(st.kv, lifecycle, st.settings, force_retire)
        configs = st.settings.directory_sync
        if not configs:
            yield
            return
        async with aiohttp.ClientSession(headers={"User-Agent": "authgate"}) as http:
            tasks = [
                asyncio.create_task(
                    DirectorySync(
                        cfg, st.kv, lifecycle, st.audit, http, peers=configs
                    ).run_forever(),
                    name=f"directory-sync-{cfg.name}",
                )
                for cfg in configs
            ]
            yield
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return background


def setup(app: web.Application, st: State, force_retire: bool = False) -> None:
    """Mount SCIM at `scim.path` (default `{prefix}/scim/v2`) before the catch-all routes."""
    app.cleanup_ctx.append(_background(st, force_retire))
    if st.settings.scim.enabled:
        scim_app = create_scim_app(
            st.settings, st.connections, st.users, lifecycle_of(st), ScimTokens(st.kv), st.audit
        )
        app.add_subapp(st.settings.scim_path, scim_app)
