"""OIDC connection settings: safe defaults, and refusals worded for the operator."""

from __future__ import annotations

from pathlib import Path

import pytest

from authgate.settings import ConfigError, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]


def settings(**conn):
    connection = {
        "id": "corp",
        "name": "Corp",
        "type": "oidc",
        "issuer": "https://idp.example.com",
        "client_id": "authgate",
        "client_secret": "s",
    }
    connection.update(conn)
    connection = {k: v for k, v in connection.items() if v is not None}
    raw = {"public_url": "https://app.example.com", "upstream": {"url": "http://127.0.0.1:1"}}
    return parse_settings({**raw, "connections": [connection]}, "c.yaml")


def problems(**conn) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        settings(**conn)
    return exc.value.problems


def test_defaults():
    conn = settings().connections[0]
    assert conn.allowed_algorithms == ["RS256", "PS256", "ES256"]
    assert conn.require_email_verified is True
    assert conn.auth_method == "client_secret_basic"
    assert conn.scopes == ["openid", "email", "profile"]
    assert conn.refresh.enabled is False
    assert conn.graph is None


def test_issuer_is_kept_byte_exact():
    assert settings(issuer="https://sts.windows.net/t/").connections[0].issuer == (
        "https://sts.windows.net/t/"
    )


def test_alg_none_cannot_be_configured():
    found = problems(allowed_algorithms=["RS256", "none"])
    assert found[0].startswith("c.yaml: connections[0].allowed_algorithms[1]:")


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        ({"issuer": "http://idp.example.com"}, "https:// issuer URL"),
        ({"issuer": "https://idp.example.com/?tenant=x"}, "no query or fragment"),
        ({"scopes": ["email"]}, "scopes must include 'openid'"),
        ({"client_secret_encrypted": "v1:x"}, "not both"),
        (
            {"client_secret": None, "token_endpoint_auth_method": "client_secret_post"},
            "needs client_secret",
        ),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "needs private_key_file"),
        (
            {"client_secret": None, "allowed_algorithms": ["RS256", "HS256"]},
            "keyed with the client secret",
        ),
        ({"allowed_tenants": ["t1"]}, "multi-tenant issuer"),
        ({"client_id": ""}, "at least 1 character"),
        ({"clock_skew": "-5s"}, "duration"),
    ],
)
def test_refusals(conn, message):
    found = problems(**conn)
    assert any(message in p for p in found), found


def test_http_issuer_only_on_loopback():
    assert settings(issuer="http://127.0.0.1:9000").connections[0].issuer == "http://127.0.0.1:9000"


def test_auth_method_follows_the_credentials(tmp_path):
    assert settings(client_secret=None).connections[0].auth_method == "none"
    key = tmp_path / "k.pem"
    key.write_text("x")
    conn = settings(client_secret=None, private_key_file=str(key)).connections[0]
    assert conn.auth_method == "private_key_jwt"


def test_entra_multi_tenant_needs_the_organizations_or_common_issuer():
    conn = settings(
        issuer="https://login.microsoftonline.com/organizations/v2.0", allowed_tenants=["t1"]
    ).connections[0]
    assert conn.allowed_tenants == ["t1"]


@pytest.mark.parametrize("name", ["okta-oidc.yaml", "entra-oidc.yaml"])
def test_shipped_examples_are_valid(name):
    loaded = load_settings(ROOT / "conf" / name)
    assert any(c.type == "oidc" for c in loaded.connections)
