"""The example configs' placeholders: secrets refused by `run`, everything else a warning.

Each kind of placeholder the examples in conf/ fall back to is tried in a config of
its own, through the environment as the examples use it (`${VAR:-placeholder}`
with VAR unset) and written straight into the file; the exact message is asserted.
A real value in the same place gives nothing at all.
"""

from __future__ import annotations

from typing import Any

import pytest

from authgate.settings import LoadedConfig, parse_config

SOURCE = "authgate.yaml"
BASE: dict[str, Any] = {
    "public_url": "https://portal.acme.test",
    "upstream": {"url": "http://127.0.0.1:8080"},
}
ISSUER = "https://login.acme.test"


def oidc(**conn: Any) -> dict[str, Any]:
    return {
        "id": "corp",
        "name": "Corp",
        "type": "oidc",
        "issuer": ISSUER,
        "client_id": "authgate",
        "client_secret": "8c1d4e0b6f2a",
        **conn,
    }


def load(monkeypatch: pytest.MonkeyPatch, **top: Any) -> LoadedConfig:
    for name in ("SECRET", "TOKEN", "ISSUER", "TENANT", "APP", "METADATA", "GROUP"):
        monkeypatch.delenv(name, raising=False)
    return parse_config({**BASE, **top}, SOURCE)


SECRETS = [
    pytest.param(
        {"connections": [oidc(client_secret="${SECRET:-change-me}")]},
        "connections[0].client_secret",
        "change-me",
        "SECRET",
        id="client_secret change-me",
    ),
    pytest.param(
        {"connections": [oidc(client_secret=None, client_secret_encrypted="${SECRET:-"
                              "v1:replace-with-authgate-secrets-encrypt-output}")]},
        "connections[0].client_secret_encrypted",
        "v1:replace-with-authgate-secrets-encrypt-output",
        "SECRET",
        id="client_secret_encrypted v1:replace-",
    ),
    pytest.param(
        {"admin": {"token": "${TOKEN:-change-me-to-openssl-rand-hex-32-output}"}},
        "admin.token",
        "change-me-to-openssl-rand-hex-32-output",
        "TOKEN",
        id="admin token change-me-to-",
    ),
    pytest.param(
        {
            "connections": [oidc()],
            "directory_sync": {
                "tenant_id": "c0ffee00-1111-2222-3333-444455556666",
                "client_id": "d00dfeed-1111-2222-3333-444455556666",
                "client_secret": "${SECRET:-replace-me}",
                "group_id": "beefcafe-1111-2222-3333-444455556666",
                "connections": ["corp"],
            },
        },
        "directory_sync.client_secret",
        "replace-me",
        "SECRET",
        id="Graph client_secret replace-me",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("top", "path", "value", "variable"), SECRETS)
def test_a_placeholder_secret_is_refused_by_run_and_a_warning_elsewhere(
    monkeypatch, top, path, value, variable
):
    loaded = load(monkeypatch, **top)
    assert loaded.placeholder_secrets() == [
        f"{SOURCE}: {path}: is the placeholder {value!r}, not a secret:"
        f" set {variable} to the real secret"
    ]
    assert loaded.warnings() == [
        f"{SOURCE}: {path}: is the placeholder {value!r}, not a secret:"
        f" set {variable} (authgate run refuses it)"
    ]


def test_a_placeholder_secret_written_into_the_file(monkeypatch):
    loaded = load(monkeypatch, connections=[oidc(client_secret="Change-Me")])
    assert loaded.placeholder_secrets() == [
        f"{SOURCE}: connections[0].client_secret: is the placeholder 'Change-Me', not a secret:"
        " put the real secret in the file"
    ]


def test_the_secret_placeholder_set_through_the_variable_is_still_refused(monkeypatch):
    monkeypatch.setenv("SECRET", "change-me")
    loaded = parse_config({**BASE, "connections": [oidc(client_secret="${SECRET}")]}, SOURCE)
    assert loaded.placeholder_secrets() == [
        f"{SOURCE}: connections[0].client_secret: is the placeholder 'change-me', not a secret:"
        " set SECRET to the real secret"
    ]


EXAMPLES = [
    pytest.param(
        {"connections": [oidc(issuer="${ISSUER:-https://idp.example.com}")]},
        "connections[0].issuer: uses the example value idp.example.com: set ISSUER",
        id="idp.example.com issuer",
    ),
    pytest.param(
        {"public_url": "https://app.example.com"},
        "public_url: uses the example value app.example.com: replace it in the file",
        id="public_url on example.com, in the file",
    ),
    pytest.param(
        {"connections": [oidc(issuer="${ISSUER:-https://example.okta.com/oauth2/default}")]},
        "connections[0].issuer: uses the example value example.okta.com: set ISSUER",
        id="Okta example org",
    ),
    pytest.param(
        {"connections": [oidc(client_id="${APP:-0oa1example2AbCdE3f4g5}")]},
        "connections[0].client_id: uses the example value 0oa1example2AbCdE3f4g5: set APP",
        id="Okta example client id",
    ),
    pytest.param(
        {"connections": [oidc(
            issuer="https://login.microsoftonline.com/"
            "${TENANT:-72f988bf-86f1-41af-91ab-2d7cd011db47}/v2.0",
            client_id="${APP:-6731de76-14a6-49ae-97bc-6eba6914391e}",
        )]},
        "connections[0].issuer: uses the example value 72f988bf-86f1-41af-91ab-2d7cd011db47:"
        " set TENANT",
        id="Entra example tenant and client id",
    ),
    pytest.param(
        {"connections": [{
            "id": "entra", "name": "Entra", "type": "saml",
            "idp_metadata_url": "https://login.microsoftonline.com/"
            "${TENANT:-72f988bf-86f1-41af-91ab-2d7cd011db47}/federationmetadata/2007-06/"
            "federationmetadata.xml?appid=${APP:-6731de76-14a6-49ae-97bc-6eba6914391e}",
        }]},
        "connections[0].idp_metadata_url: uses the example values"
        " 72f988bf-86f1-41af-91ab-2d7cd011db47, 6731de76-14a6-49ae-97bc-6eba6914391e:"
        " set TENANT and APP",
        id="Entra metadata URL with two example ids",
    ),
    pytest.param(
        {"connections": [{
            "id": "google", "name": "Google", "type": "saml",
            "idp_metadata_file": "${METADATA:-conf/saml/google-idp-metadata.example.xml}",
        }]},
        "connections[0].idp_metadata_file: uses the example value"
        " conf/saml/google-idp-metadata.example.xml: set METADATA",
        id="example metadata file",
    ),
    pytest.param(
        {"connections": [oidc()], "directory_sync": {
            "tenant_id": "c0ffee00-1111-2222-3333-444455556666",
            "client_id": "d00dfeed-1111-2222-3333-444455556666",
            "client_secret": "3f9a0c2e71b4",
            "group_id": "${GROUP:-02bd9fd6-8f93-4758-87c3-1fb73740a315}",
            "connections": ["corp"],
        }},
        "directory_sync.group_id: uses the example value 02bd9fd6-8f93-4758-87c3-1fb73740a315:"
        " set GROUP",
        id="example group id",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("top", "warning"), EXAMPLES)
def test_an_example_value_is_a_warning_only(monkeypatch, top, warning):
    loaded = load(monkeypatch, **top)
    assert loaded.placeholder_secrets() == []
    assert loaded.warnings()[0] == f"{SOURCE}: {warning}"


def test_the_entra_client_id_is_its_own_warning(monkeypatch):
    loaded = load(monkeypatch, connections=[oidc(client_id="6731de76-14a6-49ae-97bc-6eba6914391e")])
    assert loaded.warnings() == [
        f"{SOURCE}: connections[0].client_id: uses the example value"
        " 6731de76-14a6-49ae-97bc-6eba6914391e: replace it in the file"
    ]


def test_real_values_pass_silently(monkeypatch):
    monkeypatch.setenv("SECRET", "e3b0c44298fc1c149afbf4c8996fb924")
    monkeypatch.setenv("ISSUER", "https://acme.okta.com/oauth2/default")
    monkeypatch.setenv("TENANT", "0d3f5c2a-9e8b-4c7d-a6f1-2b3c4d5e6f70")
    raw = {
        **BASE,
        "connections": [
            oidc(issuer="${ISSUER:-https://idp.example.com}", client_secret="${SECRET:-change-me}"),
            {
                "id": "entra",
                "name": "Entra",
                "type": "saml",
                "idp_metadata_url": "https://login.microsoftonline.com/"
                "${TENANT:-72f988bf-86f1-41af-91ab-2d7cd011db47}/federationmetadata.xml",
                # Domains and mail addresses are not URLs: example.com there is no placeholder.
                "domains": ["example.com"],
            },
        ],
        "admin": {"token": "${SECRET}"},
        "branding": {"support": "Write to it-help@example.com"},
    }
    loaded = parse_config(raw, SOURCE)
    assert (loaded.placeholders, loaded.warnings(), loaded.placeholder_secrets()) == ((), [], [])


def test_a_secret_that_only_contains_the_word_is_not_a_placeholder(monkeypatch):
    loaded = load(monkeypatch, connections=[oidc(client_secret="please-change-me-7f3a91")])
    assert loaded.placeholders == ()
