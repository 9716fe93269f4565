"""Asking a running authgate's readyz, and waiting for it to change its answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient


async def readyz(gate: TestClient) -> tuple[int, dict[str, Any], str]:
    """Status, decoded body and raw text of one readiness probe."""
    resp = await gate.get("/_authgate/readyz")
    text = await resp.text()
    return resp.status, await resp.json(), text


async def wait_for(
    gate: TestClient,
    done: Callable[[int, dict[str, Any]], bool],
    what: str,
    within: float = 10.0,
) -> tuple[float, int, dict[str, Any], str]:
    """Probe every 50 ms until `done(status, body)`; seconds waited and the last answer."""
    started = time.monotonic()
    while True:
        status, body, text = await readyz(gate)
        waited = time.monotonic() - started
        if done(status, body):
            return waited, status, body, text
        if waited > within:
            raise AssertionError(f"{what} after {within}s; readyz said {status} {text}")
        await asyncio.sleep(0.05)


async def wait_ready(gate: TestClient, within: float = 10.0) -> float:
    """Seconds until readyz answers 200."""
    waited, *_ = await wait_for(gate, lambda s, _: s == 200, "not ready", within)
    return waited


def check(body: dict[str, Any], conn: str = "corp") -> str:
    return body["checks"][f"connection:{conn}"]
