"""Liveness, readiness and the Prometheus endpoint on its own app."""

from __future__ import annotations

from yarl import URL

from authgate.app import create_app, create_metrics_app
from authgate.session.memory import MemoryStore
from tests.conftest import cookie_header, sign_in


async def test_healthz_and_readyz(authgate):
    """The default test connection's provider is a closed loopback port: alive, not ready."""
    assert (await authgate.get("/_authgate/healthz")).status == 200
    resp = await authgate.get("/_authgate/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "not ready"
    assert body["checks"]["store"] == "ok"
    assert body["checks"]["connection:corp"].startswith(
        "metadata_unavailable: discovery document not loaded yet"
    )


async def test_unknown_authgate_endpoint_is_404_not_proxied(authgate):
    resp = await authgate.get("/_authgate/nope")
    assert resp.status == 404


async def test_metrics_count_requests_and_store_latency(aiohttp_client, settings_factory):
    app = create_app(settings_factory(), MemoryStore())
    client = await aiohttp_client(app)
    metrics = await aiohttp_client(create_metrics_app(app))
    session = await sign_in(client)
    await client.get("/x", headers=cookie_header(client, session.id))
    client.session.cookie_jar.clear()
    await client.get("/x", headers={"Accept": "application/json"})
    text = await (await metrics.get("/metrics")).text()
    assert 'authgate_requests_total{kind="proxy",outcome="forwarded"} 1.0' in text
    assert 'authgate_requests_total{kind="proxy",outcome="unauthenticated"} 1.0' in text
    assert "authgate_session_store_seconds_count 1.0" in text
    assert "authgate_upstream_seconds_count 1.0" in text


async def test_api_clients_get_json_401(authgate):
    resp = await authgate.get("/api/items", headers={"Accept": "application/json"})
    assert resp.status == 401
    body = await resp.json()
    assert body["error"] == "unauthenticated"
    assert URL(body["login_url"]).query["rd"] == "/api/items"
    assert resp.headers["X-Request-Id"] == body["correlation_id"]


async def test_xhr_gets_401_even_when_it_accepts_html(authgate):
    resp = await authgate.get(
        "/page",
        headers={"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"},
        allow_redirects=False,
    )
    assert resp.status == 401


async def test_browser_navigation_is_sent_to_login_with_the_path(authgate):
    resp = await authgate.get(
        "/reports/q?x=1", headers={"Accept": "text/html"}, allow_redirects=False
    )
    assert resp.status == 302
    location = URL(resp.headers["Location"])
    assert location.path == "/_authgate/login"
    assert location.query["rd"] == "/reports/q?x=1"


async def test_post_from_a_browser_without_session_is_not_redirected(authgate):
    resp = await authgate.post("/form", headers={"Accept": "text/html"}, allow_redirects=False)
    assert resp.status == 401
