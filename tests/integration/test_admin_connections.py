"""Connections made through the admin API: live on two replicas of one Redis, no restart.

Two apps share a real redis-server; the second is never told anything but
what the store and its channel carry. Every refusal is checked for its exact
status, reason code and the field it names, and for leaving nothing stored.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authgate.app import create_app
from authgate.connection_store import ConnectionStore
from authgate.errors import LoginStateError
from authgate.identity import Identity
from authgate.settings import Settings
from authgate.web.signin import check_pending, pending_login
from authgate.web.state import STATE
from tests.conftest import sign_in
from tests.servers import free_port

FIXTURES = Path(__file__).parent.parent / "fixtures" / "idp-samples"
ENTRA_METADATA = (FIXTURES / "entra_tenant_federationmetadata.xml").read_text()
TOKEN = "9c1e5b7a3d2f8e6c0b4a9d7e1f3c5b8a2e6d0c4f9b7a1e3d5c8b2f6a0e4d9c7b"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
API = "/_authgate/admin/api/connections"
Factory = Callable[..., Settings]


def _settings(factory: Factory, redis_url: str, key_file: Path | None, **kw: Any) -> Settings:
    return factory(
        admin={"token": TOKEN},
        session={"store": "redis", "redis": {"url": redis_url}},
        secrets={"master_key_file": str(key_file)} if key_file else {},
        access={"role_mappings": [{"group": "Admins", "roles": ["admin"], "connection": "corp"}]},
        **kw,
    )


@pytest.fixture
async def replicas(
    aiohttp_client: Callable[..., Any], settings_factory: Factory, redis_url: str, master_key: Path
) -> tuple[TestClient, TestClient]:
    settings = _settings(settings_factory, redis_url, master_key)
    first = await aiohttp_client(create_app(settings))
    second = await aiohttp_client(create_app(settings))
    return first, second


@pytest.fixture
def a(replicas: tuple[TestClient, TestClient]) -> TestClient:
    return replicas[0]


async def create(client: TestClient, body: dict[str, Any]) -> Any:
    return await client.post(API, json=body, headers=AUTH)


def saml_body(**extra: Any) -> dict[str, Any]:
    return {"type": "saml", "name": "Acme Entra", "idp_metadata_xml": ENTRA_METADATA, **extra}


async def eventually(check: Callable[[], Any], within: float = 1.0) -> float:
    """Seconds until `check()` is true; fails if it is not within `within` seconds."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within, "not in force in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def metadata_status(client: TestClient, conn_id: str) -> int:
    resp = await client.get(f"/_authgate/saml/{conn_id}/metadata")
    return resp.status


async def refused(resp: Any, status: int, error: str, field: str | None = None) -> dict[str, Any]:
    body = await resp.json()
    assert (resp.status, body["error"]) == (status, error), body
    if field is not None:
        assert body["field"] == field
    assert "Traceback" not in json.dumps(body)
    return body


async def stored_ids(client: TestClient) -> set[str]:
    return await ConnectionStore(client.app[STATE].kv).ids()


async def test_a_saml_connection_is_served_by_both_replicas_within_a_second(replicas):
    a, b = replicas
    resp = await create(a, saml_body(id="acme", domains=["acme.example"]))
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["id"] == "acme"
    assert created["active"] is False and created["managed_by"] == "admin"
    assert created["sp"] == {
        "entity_id": "https://app.example.com/_authgate/saml/acme",
        "acs_url": "https://app.example.com/_authgate/saml/acme/acs",
        "slo_url": "https://app.example.com/_authgate/saml/acme/slo",
        "metadata_url": "https://app.example.com/_authgate/saml/acme/metadata",
    }

    async def served_by_b() -> bool:
        return await metadata_status(b, "acme") == 200

    await eventually(served_by_b)
    metadata = await (await b.get("/_authgate/saml/acme/metadata")).text()
    assert 'entityID="https://app.example.com/_authgate/saml/acme"' in metadata
    assert "X509Certificate" in metadata

    resp = await a.delete(f"{API}/acme", headers=AUTH)
    assert resp.status == 200

    async def gone_from_b() -> bool:
        return await metadata_status(b, "acme") == 404

    await eventually(gone_from_b)
    assert await stored_ids(a) == set()


async def test_an_inactive_connection_signs_no_one_in_until_activated(replicas):
    a, b = replicas
    body = saml_body(id="acme")
    assert (await create(a, body)).status == 201
    login = await b.get("/_authgate/saml/acme/login", allow_redirects=False)
    assert login.status == 403
    assert "invalid_request" in await login.text()
    resp = await a.post(f"{API}/acme/activate", headers=AUTH)
    assert resp.status == 200 and (await resp.json())["active"] is True

    async def b_redirects() -> bool:
        r = await b.get("/_authgate/saml/acme/login", allow_redirects=False)
        return r.status == 302 and "login.microsoftonline.com" in r.headers["Location"]

    await eventually(b_redirects)


async def test_the_secret_is_sealed_at_rest_and_an_oidc_connection_shows_its_redirect_uri(a):
    resp = await create(
        a,
        {
            "type": "oidc",
            "id": "okta",
            "name": "Okta",
            "issuer": f"http://127.0.0.1:{free_port()}",
            "client_id": "0oa1",
            "client_secret": "the-client-secret-value",
        },
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["sp"] == {"redirect_uri": "https://app.example.com/_authgate/oidc/okta/callback"}
    raw = await a.app[STATE].kv.get("admin-connection:okta")
    assert raw is not None and b"the-client-secret-value" not in raw
    conn = a.app[STATE].connections.get("okta")
    assert conn is not None and conn.settings.client_secret == "the-client-secret-value"


async def test_the_private_key_is_sealed_and_bound_to_its_connection(a):
    assert (await create(a, saml_body(id="acme"))).status == 201
    raw = await a.app[STATE].kv.get("admin-connection:acme")
    assert raw is not None and b"PRIVATE KEY" not in raw
    doc = json.loads(raw)
    # A sealed key moved to another connection's document does not open there.
    doc["id"] = "moved"
    kv = a.app[STATE].kv
    await kv.set("admin-connection:moved", json.dumps(doc).encode())
    await kv.add_member("admin-connections", "moved")
    await a.app[STATE].connection_sync.load("moved")
    assert a.app[STATE].connections.get("moved") is None


async def test_the_audit_event_says_a_secret_changed_never_what_it_is(
    aiohttp_client, settings_factory, redis_url, master_key, tmp_path
):
    log = tmp_path / "audit.jsonl"
    settings = _settings(settings_factory, redis_url, master_key, audit={"output": str(log)})
    a = await aiohttp_client(create_app(settings))
    body = {
        "type": "oidc",
        "id": "okta",
        "name": "Okta",
        "issuer": f"http://127.0.0.1:{free_port()}",
        "client_id": "0oa1",
        "client_secret": "first-secret",
    }
    assert (await create(a, body)).status == 201
    patch = {"version": 1, "client_secret": "second-secret", "name": "Okta SSO"}
    resp = await a.patch(f"{API}/okta", json=patch, headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["version"] == 2
    text = log.read_text()
    assert "first-secret" not in text and "second-secret" not in text
    events = [json.loads(line) for line in text.splitlines()]
    created = next(e for e in events if e["event"] == "admin.connection.created")
    assert created["changes"]["client_secret"] == "changed"
    updated = next(e for e in events if e["event"] == "admin.connection.updated")
    assert updated["changes"]["client_secret"] == "changed"
    assert updated["changes"]["name"] == {"from": "Okta", "to": "Okta SSO"}
    assert (updated["actor_kind"], updated["version"]) == ("token", 2)


async def test_a_second_admin_editing_the_same_version_is_told(a):
    assert (await create(a, saml_body(id="acme"))).status == 201
    first = await a.patch(f"{API}/acme", json={"version": 1, "name": "One"}, headers=AUTH)
    assert first.status == 200
    second = await a.patch(f"{API}/acme", json={"version": 1, "name": "Two"}, headers=AUTH)
    await refused(second, 409, "version_conflict")
    assert a.app[STATE].connections.get("acme").name == "One"


async def test_a_config_file_connection_is_listed_and_read_only(a):
    listed = await (await a.get(API, headers=AUTH)).json()
    corp = next(c for c in listed["connections"] if c["id"] == "corp")
    assert corp["managed_by"] == "config file"
    for resp in (
        await a.patch(f"{API}/corp", json={"version": 0, "name": "x"}, headers=AUTH),
        await a.delete(f"{API}/corp", headers=AUTH),
        await a.post(f"{API}/corp/deactivate", headers=AUTH),
    ):
        await refused(resp, 409, "managed_by_config")
    await refused(await create(a, saml_body(id="corp")), 409, "connection_exists", "id")


async def test_no_master_key_refuses_and_says_how_to_set_one(
    aiohttp_client, settings_factory, redis_url, monkeypatch
):
    monkeypatch.delenv("AUTHGATE_MASTER_KEY", raising=False)
    client = await aiohttp_client(create_app(_settings(settings_factory, redis_url, None)))
    body = await refused(await create(client, saml_body(id="acme")), 400, "no_master_key")
    assert "authgate secrets keygen" in body["message"]
    assert "AUTHGATE_MASTER_KEY" in body["message"]
    assert await stored_ids(client) == set()


HOSTILE = {
    "doctype": '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
    "not saml": "<html><body>hello</body></html>",
    "not xml": "this is not metadata",
    "mismatched tags": "<EntityDescriptor><boom-secret></hello-tag></EntityDescriptor>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_metadata_is_refused_and_nothing_is_stored(a, name):
    resp = await create(a, saml_body(id="acme", idp_metadata_xml=HOSTILE[name]))
    body = await refused(resp, 400, "invalid_request", "idp_metadata_xml")
    for echoed in ("boom", "hello", "secret", "this is not"):
        assert echoed not in body["message"]
    assert await stored_ids(a) == set()
    assert "acme" not in a.app[STATE].connections


async def test_a_50_mb_body_is_refused_before_it_is_read(a):
    resp = await a.post(
        API, data=b"x" * (50 * 1024 * 1024), headers={**AUTH, "Content-Type": "application/json"}
    )
    await refused(resp, 413, "body_too_large", "body")


async def test_an_unreachable_metadata_url_is_refused(a):
    url = f"http://127.0.0.1:{free_port()}/metadata"
    body = saml_body(id="acme")
    del body["idp_metadata_xml"]
    resp = await create(a, {**body, "idp_metadata_url": url})
    await refused(resp, 400, "invalid_request", "idp_metadata_url")
    assert await stored_ids(a) == set()


async def test_a_metadata_url_answering_an_error_is_refused(a, aiohttp_server):
    app = web.Application()
    app.router.add_get("/metadata", lambda r: web.Response(status=404))
    server = await aiohttp_server(app)
    body = saml_body(id="acme")
    del body["idp_metadata_xml"]
    resp = await create(a, {**body, "idp_metadata_url": str(server.make_url("/metadata"))})
    got = await refused(resp, 400, "invalid_request", "idp_metadata_url")
    assert "HTTP 404" in got["message"]


def _certificate(days: int, ca: bool) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def by_hand(cert: str) -> dict[str, Any]:
    return {
        "type": "saml",
        "id": "hand",
        "name": "By hand",
        "idp": {
            "entity_id": "https://idp.example/entity",
            "sso_url": "https://idp.example/sso",
            "certificates": [cert],
        },
    }


async def test_idp_fields_by_hand_make_a_connection(a):
    resp = await create(a, by_hand(_certificate(365, ca=False)))
    assert resp.status == 201, await resp.text()
    tested = await (await a.post(f"{API}/hand/test", headers=AUTH)).json()
    assert any("IdP entity ID: https://idp.example/entity" in c["check"] for c in tested["checks"])


@pytest.mark.parametrize(
    ("days", "ca", "words"), [(-1, False, "expired on"), (365, True, "CA certificate")]
)
async def test_an_expired_or_ca_certificate_is_refused(a, days, ca, words):
    resp = await create(a, by_hand(_certificate(days, ca)))
    body = await refused(resp, 400, "invalid_request", "idp.certificates[0]")
    assert words in body["message"]
    assert await stored_ids(a) == set()


async def test_a_domain_claimed_by_another_connection_is_refused(a):
    assert (await create(a, saml_body(id="one", domains=["acme.example"]))).status == 201
    resp = await create(a, saml_body(id="two", domains=["ACME.example"]))
    body = await refused(resp, 409, "domain_claimed", "domains")
    assert "one" in body["message"]
    assert await stored_ids(a) == {"one"}


@pytest.mark.parametrize("conn_id", ["Bad Id", "../x", "a" * 80, ""])
async def test_a_malformed_id_is_refused(a, conn_id):
    body = saml_body(id=conn_id or 5)
    await refused(await create(a, body), 400, "invalid_request", "id")


async def test_a_duplicate_id_is_refused(a):
    assert (await create(a, saml_body(id="acme"))).status == 201
    await refused(await create(a, saml_body(id="acme")), 409, "connection_exists", "id")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("idp_metadata_file", "/etc/passwd"),
        ("sp_keys", [{"key_file": "/etc/shadow", "cert_file": "/etc/hosts"}]),
        ("enabled", True),
    ],
)
async def test_fields_that_name_server_files_are_refused(a, field, value):
    await refused(
        await create(a, saml_body(id="acme", **{field: value})), 400, "invalid_request", field
    )


async def test_an_unknown_setting_is_refused_by_name(a):
    resp = await create(a, saml_body(id="acme", sign_reqests=True))
    body = await refused(resp, 400, "invalid_request", "sign_reqests")
    assert "spelling" in body["message"]


async def test_a_generated_id_comes_from_the_name(a):
    resp = await create(a, saml_body(name="Acme Corp (EU)"))
    created = await resp.json()
    assert (
        created["id"].startswith("acme-corp-eu-") and len(created["id"]) == len("acme-corp-eu-") + 6
    )


async def test_deleting_retires_users_and_ends_their_sessions_but_not_the_last_admin(a):
    assert (await create(a, saml_body(id="acme"))).status == 201
    assert (await a.post(f"{API}/acme/activate", headers=AUTH)).status == 200
    bob = Identity(connection="acme", subject="bob", email="bob@acme.example", email_verified=True)
    await sign_in(a, bob)
    assert (await a.get("/")).status == 200
    shown = await (await a.get(f"{API}/acme", headers=AUTH)).json()
    assert (shown["users"], shown["sessions"]) == (1, 1)
    resp = await a.delete(f"{API}/acme", headers=AUTH)
    assert await resp.json() == {"id": "acme", "retired_users": 1, "revoked_sessions": 1}
    assert (await a.get("/", allow_redirects=False)).status in (302, 401)


async def test_removing_the_only_way_an_admin_signs_in_is_refused(
    aiohttp_client, settings_factory, redis_url, master_key
):
    settings = _settings(settings_factory, redis_url, master_key)
    settings = settings.model_copy(
        update={"access": settings.access.model_copy(update={"role_mappings": []})}
    )
    client = await aiohttp_client(create_app(settings))
    body = saml_body(id="acme", access={"role_mappings": [{"group": "IT", "roles": ["admin"]}]})
    assert (await create(client, body)).status == 201
    assert (await client.post(f"{API}/acme/activate", headers=AUTH)).status == 200
    await refused(await client.delete(f"{API}/acme", headers=AUTH), 409, "last_admin")
    await refused(await client.post(f"{API}/acme/deactivate", headers=AUTH), 409, "last_admin")
    unmap = {"version": 2, "access": {"role_mappings": []}}
    await refused(await client.patch(f"{API}/acme", json=unmap, headers=AUTH), 409, "last_admin")
    assert await stored_ids(client) == {"acme"}


async def test_a_role_mapping_change_is_seen_on_the_next_sign_in(a):
    body = saml_body(id="acme", access={"role_mappings": [{"group": "Eng", "roles": ["editor"]}]})
    assert (await create(a, body)).status == 201
    rules = a.app[STATE].connections.rules("acme")
    assert rules.role_map == {"Eng": ("editor",)}
    change = {"version": 1, "access": {"role_mappings": [{"group": "Eng", "roles": ["owner"]}]}}
    assert (await a.patch(f"{API}/acme", json=change, headers=AUTH)).status == 200
    assert a.app[STATE].connections.rules("acme").role_map["Eng"] == ("owner",)


async def test_a_sign_in_under_way_fails_with_a_clear_reason_when_its_connection_changes(a):
    assert (await create(a, saml_body(id="acme"))).status == 201
    assert (await a.post(f"{API}/acme/activate", headers=AUTH)).status == 200
    st = a.app[STATE]
    conn = st.connections.get("acme")
    pending = pending_login(conn, rd="/")
    assert (
        await a.patch(f"{API}/acme", json={"version": 2, "name": "New"}, headers=AUTH)
    ).status == 200
    with pytest.raises(LoginStateError) as caught:
        check_pending(st.connections.get("acme"), pending)
    assert caught.value.reason == "connection_changed"


async def test_a_lost_change_message_is_made_up_by_the_reconcile(replicas, monkeypatch):
    a, b = replicas
    st_b = b.app[STATE]
    monkeypatch.setattr(st_b.connection_sync, "received", lambda message: None)
    assert (await create(a, saml_body(id="acme"))).status == 201
    st_b.connection_sync.lost()

    async def served_by_b() -> bool:
        return await metadata_status(b, "acme") == 200

    await eventually(served_by_b)


def _published_certificates(metadata: str) -> list[str]:
    return re.findall(r"<ds:X509Certificate>([^<]+)</ds:X509Certificate>", metadata)


async def test_sp_certificate_rollover_adds_promotes_and_retires(replicas):
    a, b = replicas
    assert (await create(a, saml_body(id="acme"))).status == 201
    before = _published_certificates(await (await b.get("/_authgate/saml/acme/metadata")).text())
    added = await a.post(f"{API}/acme/sp-certificates/add", headers=AUTH)
    assert added.status == 200, await added.text()
    certs = (await added.json())["sp_certificates"]
    assert [c["signing"] for c in certs] == [True, False]

    async def both_published() -> bool:
        text = await (await b.get("/_authgate/saml/acme/metadata")).text()
        return len(set(_published_certificates(text))) == 2

    await eventually(both_published)
    again = await a.post(f"{API}/acme/sp-certificates/add", headers=AUTH)
    assert (again.status, (await again.json())["error"]) == (409, "rollover_in_progress")
    promoted = await a.post(f"{API}/acme/sp-certificates/promote", headers=AUTH)
    assert (await promoted.json())["sp_certificates"][0]["signing"] is True
    retired = await a.post(f"{API}/acme/sp-certificates/retire", headers=AUTH)
    assert len((await retired.json())["sp_certificates"]) == 1

    async def only_the_new_one() -> bool:
        text = await (await b.get("/_authgate/saml/acme/metadata")).text()
        published = set(_published_certificates(text))
        return len(published) == 1 and not published & set(before)

    await eventually(only_the_new_one)
    alone = await a.post(f"{API}/acme/sp-certificates/promote", headers=AUTH)
    assert (alone.status, (await alone.json())["error"]) == (409, "no_rollover")


async def test_rollover_is_for_admin_made_saml_connections(a):
    resp = await a.post(f"{API}/corp/sp-certificates/add", headers=AUTH)
    assert (resp.status, (await resp.json())["error"]) == (409, "managed_by_config")
    body = {
        "type": "oidc",
        "id": "okta",
        "name": "Okta",
        "issuer": f"http://127.0.0.1:{free_port()}",
        "client_id": "c",
        "client_secret": "s",
    }
    assert (await create(a, body)).status == 201
    resp = await a.post(f"{API}/okta/sp-certificates/add", headers=AUTH)
    assert (resp.status, (await resp.json())["error"]) == (409, "not_saml")
