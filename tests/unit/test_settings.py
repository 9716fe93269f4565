"""Config validation: every error names file, key path, problem and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from authgate.settings import ConfigError, entra_issuer, load_settings, parse_settings

BASE = {"public_url": "https://app.example.com", "upstream": {"url": "http://127.0.0.1:8080"}}


def problems(raw: dict, source: str = "conf.yaml") -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_settings(raw, source)
    return exc.value.problems


def test_minimal_config_has_safe_defaults():
    settings = parse_settings(dict(BASE))
    assert settings.prefix == "/_authgate"
    assert settings.session.store == "memory"
    assert settings.headers.user == "X-User"
    assert settings.access.default_role == "viewer"
    assert settings.https


def test_unknown_key_is_refused_with_its_path():
    raw = {**BASE, "session": {"store": "memory", "idle_timout": "5m"}}
    assert problems(raw) == [
        "conf.yaml: session.idle_timout: unknown key (check the spelling; unknown keys are refused)"
    ]


def test_unknown_key_inside_a_connection_names_its_index():
    raw = {
        **BASE,
        "connections": [
            {
                "id": "okta",
                "name": "Okta",
                "type": "oidc",
                "issuer": "https://x.okta.com",
                "client_id": "c",
                "require_email_verfied": False,
            },
        ],
    }
    assert problems(raw) == [
        "conf.yaml: connections[0].require_email_verfied: unknown key"
        " (check the spelling; unknown keys are refused)"
    ]


def test_missing_required_keys_are_all_reported_at_once():
    found = problems({})
    assert "conf.yaml: public_url: required key is missing" in found
    assert "conf.yaml: upstream: required key is missing" in found


def test_wrong_types_say_what_is_expected():
    raw = {**BASE, "session": {"store": "memory", "lifetime": "forever"}}
    assert problems(raw) == [
        "conf.yaml: session.lifetime: expected a duration such as 30s, 15m, 8h or 7d"
    ]


def test_connection_type_must_be_known():
    raw = {**BASE, "connections": [{"id": "x", "name": "X", "type": "ldap"}]}
    assert problems(raw) == ["conf.yaml: connections[0]: unknown type (expected 'oidc' or 'saml')"]


def test_redis_store_needs_a_redis_section():
    raw = {**BASE, "session": {"store": "redis"}}
    [problem] = problems(raw)
    assert problem.startswith("conf.yaml: session: ")
    assert "redis section is missing" in problem


def test_redis_topologies_are_exclusive():
    raw = {
        **BASE,
        "session": {
            "store": "redis",
            "redis": {"url": "redis://127.0.0.1:6379", "cluster_nodes": ["127.0.0.1:7000"]},
        },
    }
    [problem] = problems(raw)
    assert "set exactly one of url (standalone), sentinel or cluster_nodes" in problem
    assert "url, cluster_nodes" in problem


def test_idle_timeout_longer_than_lifetime_is_refused():
    raw = {**BASE, "session": {"store": "memory", "lifetime": "1h", "idle_timeout": "2h"}}
    assert "idle_timeout must not be longer than lifetime" in problems(raw)[0]


def test_durations_accept_units_and_numbers():
    raw = {**BASE, "session": {"store": "memory", "lifetime": "8h", "idle_timeout": 90}}
    settings = parse_settings(raw)
    assert settings.session.lifetime == 8 * 3600
    assert settings.session.idle_timeout == 90


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("public_url", "app.example.com", "expected an absolute http:// or https:// URL"),
        ("listen", "4180", "expected HOST:PORT"),
        ("prefix", "/_authgate/", "expected a path such as /_authgate (no trailing slash)"),
        ("trusted_proxies", ["10.0.0.0/33"], "expected an IP address or CIDR"),
    ],
)
def test_value_checks(key, value, expected):
    [problem] = problems({**BASE, key: value})
    assert expected in problem


def test_duplicate_connection_ids_are_refused():
    conn = {"id": "a", "name": "A", "type": "oidc", "issuer": "https://i", "client_id": "c"}
    assert "connection id 'a' is used twice" in problems({**BASE, "connections": [conn, conn]})[0]


def test_header_names_are_checked_and_can_be_disabled():
    settings = parse_settings({**BASE, "headers": {"groups": None}})
    assert settings.headers.groups is None
    assert "expected an HTTP header name" in problems({**BASE, "headers": {"user": "X User"}})[0]


def test_env_interpolation(monkeypatch):
    monkeypatch.setenv("AG_UPSTREAM", "http://10.1.2.3:9000")
    raw = {**BASE, "upstream": {"url": "${AG_UPSTREAM}"}, "prefix": "${AG_PREFIX:-/auth}"}
    settings = parse_settings(raw)
    assert settings.upstream.url == "http://10.1.2.3:9000"
    assert settings.prefix == "/auth"


def test_missing_env_variable_names_the_key_and_the_fix(monkeypatch):
    monkeypatch.delenv("AG_NOPE", raising=False)
    assert problems({**BASE, "upstream": {"url": "${AG_NOPE}"}}) == [
        "conf.yaml: upstream.url: environment variable AG_NOPE is not set"
        " (export it, or write ${AG_NOPE:-default})"
    ]


def test_invalid_yaml_names_line_and_column(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("public_url: https://x\nupstream:\n  url: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    [problem] = exc.value.problems
    assert problem.startswith(f"{path}: invalid YAML at line")


def test_unreadable_file(tmp_path: Path):
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path / "missing.yaml")
    assert exc.value.problems == [
        f"{tmp_path / 'missing.yaml'}: no such config file: pass --config FILE or set"
        " AUTHGATE_CONFIG (examples to start from are in conf/)"
    ]


def test_top_level_must_be_a_mapping():
    assert problems(["a"]) == ["conf.yaml: the file must hold a YAML mapping of settings"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("issuer", "entra"),
    [
        ("https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0", True),
        ("https://LOGIN.microsoftonline.com/organizations/v2.0", True),
        ("https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0", True),
        ("https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/", True),
        ("https://login.microsoftonline.com.evil.example/tenant/v2.0", False),
        ("https://evil.example/login.microsoftonline.com/v2.0", False),
        ("https://login.microsoftonline.com:8443/tenant/v2.0", False),
        ("https://contoso.okta.com", False),
    ],
)
def test_entra_issuer_is_recognised_by_its_whole_authority(issuer, entra):
    assert entra_issuer(issuer) is entra


SYNC = {"tenant_id": "t", "client_id": "c", "client_secret": "s", "group_id": "g"}


def sync_settings(directory_sync):
    return parse_settings(
        {"public_url": "https://a.example.com", "upstream": {"url": "http://127.0.0.1:1"},
         "directory_sync": directory_sync},
        "test.yaml",
    )  # fmt: skip


def sync_problems(directory_sync) -> list[str]:
    with pytest.raises(ConfigError) as err:
        sync_settings(directory_sync)
    return err.value.problems


def test_the_single_directory_sync_mapping_still_loads_as_default():
    (cfg,) = sync_settings(SYNC).directory_sync
    assert cfg.name == "default" and cfg.connections == []
    assert cfg.properties == ["id", "userPrincipalName", "mail", "mobilePhone", "displayName"]


def test_a_problem_in_the_single_mapping_is_named_without_an_index():
    assert sync_problems({**SYNC, "intervall": "1m"}) == [
        "test.yaml: directory_sync.intervall: unknown key (check the spelling; unknown keys are"
        " refused)"
    ]


def test_several_directory_syncs_need_distinct_names():
    assert sync_problems([{**SYNC, "name": "a"}, {**SYNC, "name": "a"}]) == [
        "test.yaml: (top level): directory_sync[1].name: 'a' is used twice"
        " (give each configuration its own)"
    ]


@pytest.mark.parametrize(
    ("export", "problem"),
    [
        ({"template": "{mail} {mobilePhone}"},
         "directory_sync[0]: export.template uses mobilePhone, which select does not read"
         " (add mobilePhone to select)"),
        ({"template": "{mail!r}"}, "directory_sync[0].export.template: {mail} is not a field"),
        ({"template": "* <reg> - 0"}, "the template names no property, such as {mail}"),
        ({"template": "{mail"}, "unbalanced { or } (write {{ or }} for a literal brace)"),
        ({"template": "{mail}", "key": ["mobilePhone"]},
         "export.key names mobilePhone, which the template lacks"),
    ],
)  # fmt: skip
def test_export_templates_are_checked_at_start_up(export, problem):
    (found,) = sync_problems([{**SYNC, "select": ["mail"], "export": export}])
    assert problem in found
