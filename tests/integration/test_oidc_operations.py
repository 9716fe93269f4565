"""Running an OIDC connection: discovery at start-up, readiness, misdirected messages,
encrypted secrets, and the `authgate test` / `authgate status` commands (as real processes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from authgate.cli import main
from authgate.secrets import MASTER_KEY_ENV, encrypt, generate_key, parse_key
from authgate.web.state import STATE
from tests.readiness import check, wait_ready
from tests.saml_idp import IDP_SAMPLES
from tests.servers import free_port


async def json_get(browser, path: str):
    resp = await browser.gate.get(path, headers={"Accept": "application/json"})
    return resp.status, await resp.json()


async def test_discovery_and_keys_are_fetched_at_start_up_once(oidc_gate, oidc_op):
    browser = await oidc_gate()
    await wait_ready(browser.gate)
    assert (oidc_op.discovery_fetches, oidc_op.jwks_fetches) == (1, 1)
    assert (await browser.login()).status == 302
    assert (oidc_op.discovery_fetches, oidc_op.jwks_fetches) == (1, 1), "the login used the copy"


async def test_unreachable_provider_fails_the_login_and_readiness(oidc_gate):
    browser = await oidc_gate(issuer=f"http://127.0.0.1:{free_port()}")
    status, body = await json_get(browser, "/_authgate/oidc/corp/login")
    assert (status, body["error"]) == (400, "metadata_unavailable")
    status, body = await json_get(browser, "/_authgate/readyz")
    assert status == 503
    assert check(body) == (
        "metadata_unavailable: discovery document not loaded yet (last attempt: unreachable)"
    )


async def test_last_good_discovery_document_is_kept_while_the_provider_is_down(oidc_gate, oidc_op):
    browser = await oidc_gate(discovery_ttl="1ms")
    await wait_ready(browser.gate)
    await oidc_op.stop()
    await asyncio.sleep(0.01)
    assert (await browser.start()).startswith(oidc_op.url("/authorize"))
    protocol = browser.gate.app[STATE].connections.engine("corp")
    assert protocol.discovery.freshness.failure == "unreachable"
    status, body = await json_get(browser, "/_authgate/readyz")
    assert (status, check(body)) == (200, "ok"), "the last good copy is within its grace"


async def test_saml_messages_and_connections_are_a_protocol_mismatch(oidc_gate, oidc_op):
    saml = {
        "id": "adfs",
        "name": "ADFS",
        "type": "saml",
        "idp_metadata_file": str(IDP_SAMPLES / "okta_idp_metadata.xml"),
    }
    browser = await oidc_gate({"connections": [saml]})
    st = browser.gate.app[STATE]
    status, body = await json_get(browser, "/_authgate/oidc/adfs/login")
    assert (status, body["error"]) == (400, "protocol_mismatch")
    assert (await st.status.get("adfs"))["last_failure_reason"] == "protocol_mismatch"
    status, body = await json_get(browser, "/_authgate/oidc/adfs/callback?code=x&state=y")
    assert body["error"] == "protocol_mismatch"
    status, body = await json_get(browser, "/_authgate/oidc/nope/login")
    assert body["error"] == "invalid_request"


async def test_saml_request_parameter_at_the_oidc_login(oidc_gate, oidc_op):
    browser = await oidc_gate()
    status, body = await json_get(browser, "/_authgate/oidc/corp/login?SAMLRequest=fZJNT8Mw")
    assert (status, body["error"]) == (400, "protocol_mismatch")


async def test_encrypted_client_secret(oidc_gate, oidc_op, monkeypatch):
    key = generate_key()
    sealed = encrypt(oidc_op.client_secret, parse_key(key))
    monkeypatch.setenv(MASTER_KEY_ENV, key)
    browser = await oidc_gate(client_secret=None, client_secret_encrypted=sealed)
    assert (await browser.login()).status == 302
    assert sealed not in str(oidc_op.token_requests)


async def test_undecryptable_client_secret_fails_with_decrypt_failed(
    oidc_gate, oidc_op, monkeypatch
):
    sealed = encrypt(oidc_op.client_secret, parse_key(generate_key()))
    monkeypatch.setenv(MASTER_KEY_ENV, generate_key())
    browser = await oidc_gate(client_secret=None, client_secret_encrypted=sealed)
    status, body = await json_get(browser, "/_authgate/readyz")
    assert status == 503
    assert body["checks"]["connection:corp"].startswith("decrypt_failed")
    status, body = await json_get(browser, "/_authgate/oidc/corp/login")
    assert body["error"] == "decrypt_failed"
    st = browser.gate.app[STATE]
    assert (await st.status.get("corp"))["last_failure_reason"] == "decrypt_failed"
    assert oidc_op.token_requests == []


async def authgate_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real command line, in a thread (it runs its own event loop) while the OP serves."""
    code = await asyncio.to_thread(main, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_config(tmp_path: Path, oidc_op, redis_url: str | None = None, **conn) -> Path:
    connection = {
        "id": "corp",
        "name": "Corp",
        "type": "oidc",
        "issuer": oidc_op.issuer,
        "client_id": oidc_op.client_id,
        "client_secret": oidc_op.client_secret,
        **conn,
    }
    raw = {
        "public_url": "https://app.example.com",
        "upstream": {"url": "http://127.0.0.1:9"},
        "connections": [connection],
    }
    if redis_url:
        raw["session"] = {"store": "redis", "redis": {"url": redis_url}}
    path = tmp_path / "authgate.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def test_authgate_test_reports_discovery_and_keys(oidc_op, tmp_path, capsys):
    path = write_config(tmp_path, oidc_op)
    code, out, err = await authgate_cli(capsys, "test", "corp", "--config", str(path))
    assert code == 0, out + err
    assert "redirect URI to register: https://app.example.com/_authgate/oidc/corp/callback" in out
    assert f"issuer {oidc_op.issuer} matches" in out
    assert "2 key(s) usable with RS256, PS256, ES256: rsa-1 RSA RS256/PS256, ec-1 EC ES256" in out
    assert out.rstrip().endswith("result: OK")


async def test_authgate_test_fails_on_an_issuer_mismatch(oidc_op, tmp_path, capsys):
    oidc_op.discovery_overrides["issuer"] = "https://evil.example.com"
    path = write_config(tmp_path, oidc_op)
    code, out, _ = await authgate_cli(capsys, "test", "corp", "--config", str(path))
    assert code == 1
    assert "FAIL discovery" in out and "issuer_mismatch" in out
    assert "result: 1 problem(s)" in out


async def test_authgate_test_says_remove_the_trailing_slash(oidc_op, tmp_path, capsys):
    path = write_config(tmp_path, oidc_op, issuer=oidc_op.issuer + "/")
    code, out, _ = await authgate_cli(capsys, "test", "corp", "--config", str(path))
    assert code == 1
    assert (
        f"FAIL discovery {oidc_op.issuer}/.well-known/openid-configuration: issuer_mismatch:"
        f" configured {oidc_op.issuer}/, the provider says {oidc_op.issuer}"
        " — remove the trailing slash\n"
    ) in out


async def test_authgate_test_names_the_client_authentication_from_discovery(
    oidc_op, tmp_path, capsys
):
    oidc_op.auth_methods = ("client_secret_post", "private_key_jwt")
    path = write_config(tmp_path, oidc_op)
    code, out, _ = await authgate_cli(capsys, "test", "corp", "--config", str(path))
    assert code == 0, out
    assert (
        "ok  client authentication: client_secret_post"
        " (chosen from the provider's client_secret_post, private_key_jwt)\n"
    ) in out


async def test_authgate_test_fails_when_the_provider_accepts_no_client_secret(
    oidc_op, tmp_path, capsys
):
    oidc_op.auth_methods = ("private_key_jwt",)
    path = write_config(tmp_path, oidc_op)
    code, out, _ = await authgate_cli(capsys, "test", "corp", "--config", str(path))
    assert code == 1
    assert (
        "FAIL client authentication: idp_error: the provider's token endpoint accepts"
        " private_key_jwt (token_endpoint_auth_methods_supported), neither"
    ) in out
    assert "result: 1 problem(s)" in out


async def test_authgate_test_notes_a_configured_method_the_provider_does_not_list(
    oidc_op, tmp_path, capsys
):
    oidc_op.discovery_overrides["token_endpoint_auth_methods_supported"] = ["client_secret_basic"]
    path = write_config(tmp_path, oidc_op, token_endpoint_auth_method="client_secret_post")
    code, out, _ = await authgate_cli(capsys, "test", "corp", "--config", str(path))
    assert code == 0, out
    assert (
        "ok  client authentication: client_secret_post"
        " (configured; the provider lists only client_secret_basic)\n"
    ) in out


async def test_authgate_test_fails_without_usable_keys(oidc_op, tmp_path, capsys):
    oidc_op.published = [oidc_op.ec]
    path = write_config(tmp_path, oidc_op, allowed_algorithms=["RS256"])
    code, out, _ = await authgate_cli(capsys, "test", "corp", "--config", str(path))
    assert code == 1
    assert "FAIL JWKS" in out and "0 key(s) usable with RS256" in out


async def test_authgate_test_unknown_connection(oidc_op, tmp_path, capsys):
    path = write_config(tmp_path, oidc_op)
    code, _, err = await authgate_cli(capsys, "test", "nope", "--config", str(path))
    assert code == 2
    assert "no connection 'nope' (configured: corp)" in err
