"""The `scim2-tester` compliance checker (RFC 7643/7644), run against a live authgate.

authgate listens on a real TCP port; the checker's synchronous HTTP client
runs in a worker thread so the server's event loop keeps serving it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx2
import pytest
from aiohttp.test_utils import TestServer
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from authgate.app import create_app
from tests.conftest import redis_kv
from tests.scim_support import SCIM, bearer, provisioning_settings

pytestmark = pytest.mark.integration
PASSING = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE, Status.SKIPPED}
# Deliberate: a client that removes `active` from a deactivated user does not reactivate it
# (fail closed), so authgate keeps answering `active: false` where the checker expects no value.
KEPT_INACTIVE = "check_remove_attribute: PATCH modify() did not remove attribute 'active'"


def run_checker(base_url: str, headers: dict[str, str]) -> list:
    with httpx2.Client(base_url=base_url, headers=headers, timeout=30) as http:
        return check_server(SyncSCIMClient(http))


async def test_scim2_tester_finds_no_violation(aiohttp_client, redis_url, tmp_path: Path):
    settings = provisioning_settings(tmp_path / "audit.jsonl", redis_url)
    server = TestServer(create_app(settings, redis_kv(redis_url)))
    client = await aiohttp_client(server)
    headers = await bearer(client)
    results = await asyncio.to_thread(run_checker, str(server.make_url(SCIM)), headers)
    problems = [
        f"{r.status.name} {r.resource_type or ''} {r.title}: {r.reason}"
        for r in results
        if r.status not in PASSING and f"{r.title}: {r.reason}" != KEPT_INACTIVE
    ]
    assert len(results) > 50, "the checker ran its discovery, CRUD and PATCH checks"
    assert problems == [], "\n".join(problems)
