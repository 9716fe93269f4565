"""Every example in conf/ passes `authgate check-config`, with no environment set.

The examples are what operators copy; one that fails validation, or that
routes an email domain to a connection which then refuses it, would teach
a broken setup.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from authgate.cli import EXIT_CONFIG, main
from authgate.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.relative_to(ROOT) for p in (ROOT / "conf").glob("*.yaml"))
REQUIRED = {
    "conf/sidecar.yaml",
    "conf/entra-saml.yaml",
    "conf/okta-oidc.yaml",
    "conf/google-saml.yaml",
    "conf/multi-connection.yaml",
    "conf/entra-saml-scim.yaml",
    "conf/per-organization-sso.yaml",
    "conf/entra-graph-sync.yaml",
    "conf/saml-csv-preprovisioned.yaml",
    "conf/entra-saml-eppn.yaml",
    "conf/nginx/authgate-auth-request.conf",
}
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root with none of the variables the examples mention."""
    monkeypatch.chdir(ROOT)
    for path in EXAMPLES:
        for name in ENV_REF.findall(path.read_text()):
            monkeypatch.delenv(name, raising=False)


def test_the_promised_examples_exist():
    present = {str(p.relative_to(ROOT)) for p in (ROOT / "conf").rglob("*") if p.is_file()}
    assert present >= REQUIRED


@pytest.mark.parametrize("path", EXAMPLES, ids=str)
def test_check_config_accepts_the_example(path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: OK (")


@pytest.mark.parametrize("path", EXAMPLES, ids=str)
def test_every_discovered_domain_is_owned_once_and_allowed(path: Path):
    settings = load_settings(path)
    owners: dict[str, str] = {}
    for conn in settings.connections:
        for domain in conn.domains:
            assert domain not in owners, f"{domain} routes to {owners[domain]} and {conn.id}"
            owners[domain] = conn.id
            for allowed in (settings.access.allowed_domains, conn.allowed_domains):
                assert not allowed or domain in allowed, f"{conn.id}: {domain} would be refused"


def test_multi_connection_discovery_reaches_each_organisation():
    settings = load_settings("conf/multi-connection.yaml")
    by_domain = {d: c.id for c in settings.connections for d in c.domains}
    assert by_domain == {
        "contoso.com": "contoso",
        "fabrikam.example": "fabrikam",
        "northwind.example": "northwind",
        "northwind-traders.example": "northwind",
    }
    assert {c.type for c in settings.connections} == {"saml", "oidc"}


def test_a_broken_copy_of_an_example_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    broken = tmp_path / "sidecar.yaml"
    text = Path("conf/sidecar.yaml").read_text()
    broken.write_text(text.replace("  idle_timeout: 1h", "  idle_timout: 1h", 1))
    assert main(["check-config", str(broken)]) == EXIT_CONFIG
    assert capsys.readouterr().err == (
        "configuration error:\n"
        f"  {broken}: session.idle_timout: unknown key (check the spelling; unknown keys are"
        " refused)\n"
    )
