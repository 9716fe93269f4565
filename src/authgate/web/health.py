"""Liveness, and readiness that fails while the store or a protocol's metadata is unusable."""

from __future__ import annotations

import logging

from aiohttp import web

from authgate.errors import StoreUnavailable
from authgate.web.state import state

log = logging.getLogger("authgate")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    st = state(request)
    checks: dict[str, str] = {}
    try:
        await st.kv.ping()
        checks["store"] = "ok"
    except StoreUnavailable as exc:
        log.warning("readiness: session store unavailable: %s", exc.detail)
        checks["store"] = "unavailable"
    for conn in st.connections:
        if conn.engine is not None and conn.active:
            checks[f"connection:{conn.id}"] = conn.engine.readiness_problem() or "ok"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )
