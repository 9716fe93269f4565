"""Readiness follows the IdP documents: loaded at start-up without holding it back, ready once
loaded, still ready while a refresh fails within the grace, not ready past it.

Every IdP here is a real server on a loopback port (the test OpenID Provider, a SAML
metadata server, a socket that accepts and never answers) that the tests stop, break
and bring back. Only the passing of OIDC's grace (ten minutes at least) is simulated,
by moving the time of the last good copy back.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from authgate.app import create_app
from authgate.protocols.oidc import OidcProtocol
from authgate.protocols.saml import SamlProtocol
from authgate.settings import parse_settings
from authgate.web.state import STATE
from tests.integration.test_saml_metadata import MetadataServer
from tests.oidc_op import TestOP
from tests.readiness import check, readyz, wait_for, wait_ready
from tests.servers import free_port

OIDC_DOWN = "metadata_unavailable: discovery document not loaded yet (last attempt: unreachable)"
# With the test OP's 1 s TTLs, a failed refresh is retried every second.
RETRY_BOUND = 5.0


def oidc(conn_id: str, op: TestOP, **extra: Any) -> dict[str, Any]:
    return {
        "id": conn_id,
        "name": conn_id,
        "type": "oidc",
        "issuer": op.issuer,
        "client_id": op.client_id,
        "client_secret": op.client_secret,
        **extra,
    }


def saml(conn_id: str, **source: Any) -> dict[str, Any]:
    return {"id": conn_id, "name": conn_id, "type": "saml", **source}


@pytest.fixture
def gate_for(aiohttp_client: Callable[..., Any], upstream: TestServer) -> Callable[..., Any]:
    """Factory: a started authgate (memory store) with the given connections."""

    async def make(*connections: dict[str, Any]) -> TestClient:
        raw = {
            "public_url": "http://authgate.test",
            "upstream": {"url": str(upstream.make_url("")).rstrip("/")},
            "audit": {"output": "stdout"},
            "connections": list(connections),
        }
        return await aiohttp_client(create_app(parse_settings(raw, "readiness-test.yaml")))

    return make


@pytest.fixture
async def stopped_op() -> AsyncIterator[TestOP]:
    """A provider whose port is free: down until the test starts it."""
    op = TestOP()
    yield op
    await op.stop()


@pytest.fixture
async def metadata_url_server(saml_idp: Any) -> AsyncIterator[MetadataServer]:
    server = MetadataServer(saml_idp.metadata())
    await server.server.start_server()
    yield server
    await server.server.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def oidc_protocol(gate: TestClient, conn_id: str = "corp") -> OidcProtocol:
    protocol = gate.app[STATE].connections.engine(conn_id)
    assert isinstance(protocol, OidcProtocol)
    return protocol


def saml_protocol(gate: TestClient, conn_id: str = "corp") -> SamlProtocol:
    protocol = gate.app[STATE].connections.engine(conn_id)
    assert isinstance(protocol, SamlProtocol)
    return protocol


def attempted(conn_id: str = "corp") -> Callable[[int, dict[str, Any]], bool]:
    """True once the connection's readiness line names a failed attempt."""
    return lambda status, body: "last attempt" in body["checks"][f"connection:{conn_id}"]


# --- OIDC ----------------------------------------------------------------------------------


async def test_provider_down_at_start_is_named_then_ready_soon_after_it_comes_up(
    gate_for, oidc_op, stopped_op
):
    gate = await gate_for(oidc("corp", oidc_op), oidc("partner", stopped_op))
    _, status, body, text = await wait_for(gate, attempted("partner"), "no failed attempt")
    assert status == 503
    assert body["status"] == "not ready"
    assert check(body, "partner") == OIDC_DOWN
    assert str(stopped_op.port) not in text, "no URL of the IdP in the answer"
    await wait_for(gate, lambda _, b: check(b) == "ok", "corp is not ready")
    assert (await gate.get("/_authgate/healthz")).status == 200

    await stopped_op.start()
    waited = await wait_ready(gate)
    assert waited < RETRY_BOUND, "a never-loaded document is retried after 1 s, 2 s, 4 s ..."
    assert (stopped_op.discovery_fetches, stopped_op.jwks_fetches) == (1, 1)


async def test_start_up_does_not_wait_for_a_provider_that_never_answers(gate_for, silent_port):
    silent = f"http://127.0.0.1:{silent_port}"
    started = time.monotonic()
    gate = await gate_for(
        {**oidc("corp", TestOP()), "issuer": silent, "http_timeout": "1s"},
        saml("metadata", idp_metadata_url=silent + "/metadata"),
    )
    assert time.monotonic() - started < 1.0
    status, body, _ = await readyz(gate)
    assert status == 503
    assert check(body) == "metadata_unavailable: discovery document not loaded yet"
    assert check(body, "metadata") == "metadata_unavailable: IdP metadata not loaded yet"
    _, _, body, _ = await wait_for(gate, attempted(), "the discovery fetch never timed out")
    assert check(body) == (
        "metadata_unavailable: discovery document not loaded yet (last attempt: timed out)"
    )


async def test_unusable_keys_location_is_named_without_echoing_it(gate_for, oidc_op):
    dead = free_port()
    oidc_op.discovery_overrides["jwks_uri"] = f"http://127.0.0.1:{dead}/keys"
    gate = await gate_for(oidc("corp", oidc_op))
    _, status, body, text = await wait_for(gate, attempted(), "no failed JWKS fetch")
    assert status == 503
    assert check(body) == "metadata_unavailable: JWKS not loaded yet (last attempt: unreachable)"
    assert str(dead) not in text


async def test_the_providers_answer_never_reaches_the_readiness_line(gate_for, oidc_op):
    oidc_op.discovery_overrides["issuer"] = "https://evil.example.com/<script>"
    gate = await gate_for(oidc("corp", oidc_op))
    _, status, body, text = await wait_for(gate, attempted(), "no failed discovery fetch")
    assert status == 503
    assert check(body) == (
        "metadata_unavailable: discovery document not loaded yet (last attempt: issuer_mismatch)"
    )
    assert "evil" not in text and "<script>" not in text


@pytest.mark.parametrize(
    ("document", "limit"),
    [("discovery", "discovery document"), ("keys", "JWKS")],
)
async def test_a_provider_that_goes_down_keeps_the_pod_ready_until_the_grace_is_over(
    gate_for, oidc_op, document, limit
):
    gate = await gate_for(oidc("corp", oidc_op, discovery_ttl="1s", jwks_ttl="1s"))
    await wait_ready(gate)
    protocol = oidc_protocol(gate)
    freshness = getattr(protocol, document).freshness

    await oidc_op.stop()
    await wait_for(
        gate,
        lambda *_: freshness.failure == "unreachable",
        "the refresh did not run",
        RETRY_BOUND,
    )
    status, body, _ = await readyz(gate)
    assert (status, check(body)) == (200, "ok"), "one failed refresh is within the grace"

    assert freshness.limit == 1 + 600, "TTL 1 s plus the grace of at least 10 minutes"
    assert freshness.loaded_at is not None
    freshness.loaded_at -= 700
    status, body, _ = await readyz(gate)
    assert status == 503
    ttl = "discovery_ttl" if document == "discovery" else "jwks_ttl"
    assert re.fullmatch(
        rf"metadata_unavailable: {limit} last loaded 11m 4\ds ago,"
        rf" more than {ttl} 1s \+ grace 10m \(last attempt: unreachable\)",
        check(body),
    ), check(body)

    await oidc_op.start()
    assert await wait_ready(gate) < RETRY_BOUND


# --- SAML ----------------------------------------------------------------------------------


async def test_saml_metadata_url_down_at_start_then_ready_soon_after_it_comes_up(
    gate_for, metadata_url_server
):
    metadata_url_server.fail = True
    gate = await gate_for(saml("corp", idp_metadata_url=metadata_url_server.url))
    _, status, body, text = await wait_for(gate, attempted(), "no failed metadata fetch")
    assert status == 503
    assert check(body) == (
        "metadata_unavailable: IdP metadata not loaded yet (last attempt: HTTP 500)"
    )
    assert metadata_url_server.url not in text and "down" not in text

    metadata_url_server.fail = False
    assert await wait_ready(gate) < RETRY_BOUND


async def test_saml_metadata_url_that_goes_down_keeps_the_pod_ready_for_metadata_max_age(
    gate_for, metadata_url_server
):
    gate = await gate_for(
        saml(
            "corp",
            idp_metadata_url=metadata_url_server.url,
            metadata_refresh="1s",
            metadata_max_age="3s",
        )
    )
    await wait_ready(gate)
    freshness = saml_protocol(gate).metadata.freshness

    metadata_url_server.fail = True
    await wait_for(
        gate, lambda *_: freshness.failure == "HTTP 500", "the refresh did not run", RETRY_BOUND
    )
    status, body, _ = await readyz(gate)
    assert (status, check(body)) == (200, "ok"), "the last good copy is younger than 3 s"

    _, _, body, _ = await wait_for(gate, lambda s, _: s == 503, "still ready past 3 s")
    assert re.fullmatch(
        r"metadata_unavailable: IdP metadata last loaded [34]s ago,"
        r" more than metadata_max_age 3s \(last attempt: HTTP 500\)",
        check(body),
    ), check(body)

    metadata_url_server.fail = False
    assert await wait_ready(gate) < RETRY_BOUND


async def test_inline_idp_details_are_ready_from_the_start(gate_for, saml_idp, tmp_path):
    metadata = tmp_path / "idp.xml"
    metadata.write_bytes(saml_idp.metadata())
    by_hand = {
        "entity_id": saml_idp.entity_id,
        "sso_url": saml_idp.sso_url,
        "certificates": [saml_idp.keys.cert_pem.decode()],
    }
    gate = await gate_for(saml("file", idp_metadata_file=str(metadata)), saml("hand", idp=by_hand))
    status, body, _ = await readyz(gate)
    assert (status, body["checks"]) == (
        200,
        {"store": "ok", "connection:file": "ok", "connection:hand": "ok"},
    )
