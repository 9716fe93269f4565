"""The ACS as a whole: pending requests per browser, replay across replicas, hostile XML,
bounded bodies, protocol mismatch, IdP-initiated logins, and how failures are reported."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from lxml import etree

from authgate.web.state import STATE
from tests.conftest import UPSTREAM_HITS
from tests.integration.test_saml_hostile import post_refused, refused, response, signed
from tests.saml_gate import ACS_URL, JSON, PUBLIC_URL, SamlBrowser
from tests.saml_idp import TestIdp, encode
from tests.servers import free_port, wait_for_port
from tests.simplesamlphp import TYPED

# --- the pending AuthnRequest, per browser ------------------------------------------------


async def test_unknown_in_response_to(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    await browser.start()
    root = signed(saml_idp, "id-never-issued-by-authgate")
    await post_refused(browser, root, "state_expired", counted_upstream)


async def test_valid_response_delivered_into_another_browser(saml_gate, saml_idp, counted_upstream):
    victim = await saml_gate()
    rid = await victim.start()
    attacker = await saml_gate()
    await attacker.start()
    resp = await attacker.post(encode(signed(saml_idp, rid)))
    await refused(attacker, resp, "state_mismatch", counted_upstream)


async def test_response_without_the_pre_login_cookie(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    browser.gate.session.cookie_jar.clear()
    await post_refused(browser, signed(saml_idp, rid), "state_mismatch", counted_upstream)


async def test_unsolicited_when_idp_initiated_is_off(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    await post_refused(browser, signed(saml_idp, None), "state_mismatch", counted_upstream)


async def test_idp_initiated_when_allowed_uses_a_safe_relay_state(saml_gate, saml_idp):
    browser = await saml_gate(allow_idp_initiated=True)
    resp = await browser.post(encode(signed(saml_idp, None)), relay_state="/reports?q=1")
    assert resp.status == 302
    assert resp.headers["Location"] == "/reports?q=1"
    evil = await saml_gate(allow_idp_initiated=True)
    resp = await evil.post(encode(signed(saml_idp, None)), relay_state="https://evil.test/x")
    assert resp.headers["Location"] == "/"


async def test_two_tabs_log_in_at_once(saml_gate, saml_idp):
    browser = await saml_gate()
    first, second = await browser.start(rd="/one"), await browser.start(rd="/two")
    assert (await browser.post(encode(signed(saml_idp, second)))).headers["Location"] == "/two"
    assert (await browser.post(encode(signed(saml_idp, first)))).headers["Location"] == "/one"


# --- replay ---------------------------------------------------------------------------------


async def test_replay_in_the_same_browser(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    once = encode(signed(saml_idp, rid))
    assert (await browser.post(once)).status == 302
    await browser.gate.get("/_authgate/logout", allow_redirects=False, headers=TYPED)
    resp = await browser.post(once)
    body = await resp.json()
    assert body["error"] == "replayed"
    assert (await browser.whoami()).status == 401


def _write_config(path: Path, port: int, redis_url: str, metadata: Path, upstream: str) -> None:
    config = {
        "listen": f"127.0.0.1:{port}",
        "public_url": PUBLIC_URL,
        "upstream": {"url": upstream},
        "session": {"store": "redis", "redis": {"url": redis_url}},
        "metrics": {"enabled": False},
        "connections": [
            {"id": "corp", "name": "Corp", "type": "saml", "idp_metadata_file": str(metadata)}
        ],
    }
    path.write_text(yaml.safe_dump(config))


@pytest.fixture
def second_process(
    tmp_path: Path, redis_url: str, saml_idp: TestIdp, counted_upstream: TestServer
) -> Iterator[str]:
    """A separate `authgate run` process on the same Redis: another replica."""
    metadata = tmp_path / "idp.xml"
    metadata.write_bytes(saml_idp.metadata())
    port = free_port()
    config = tmp_path / "authgate.yaml"
    _write_config(config, port, redis_url, metadata, str(counted_upstream.make_url("")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "authgate", "run", "--config", str(config), "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_replay_to_a_second_process_on_the_same_redis(
    saml_gate, saml_idp, second_process, counted_upstream
):
    browser = await saml_gate()
    rid = await browser.start()
    once = encode(signed(saml_idp, rid))
    assert (await browser.post(once)).status == 302
    async with aiohttp.ClientSession() as other:
        resp = await other.post(
            second_process + "/_authgate/saml/corp/acs",
            data={"SAMLResponse": once},
            headers={**JSON, "Cookie": browser.login_cookie()},
            allow_redirects=False,
        )
        body = await resp.json()
    assert resp.status == 400
    assert body["error"] == "replayed"


async def test_two_concurrent_posts_of_one_response_exactly_one_wins(saml_gate, saml_idp):
    browser = await saml_gate()
    replica = await saml_gate()
    rid = await browser.start()
    once = encode(signed(saml_idp, rid))
    results = await asyncio.gather(
        browser.post(once),
        replica.post(once, headers={**JSON, "Cookie": browser.login_cookie()}),
        browser.post(once),
    )
    statuses = sorted(r.status for r in results)
    assert statuses == [302, 400, 400]
    errors = [(await r.json())["error"] for r in results if r.status == 400]
    assert errors == ["replayed", "replayed"]


# --- hostile XML and bodies -------------------------------------------------------------------


def _with_doctype(saml_idp: TestIdp, rid: str, doctype: str, entity_use: str = "") -> str:
    xml = etree.tostring(signed(saml_idp, rid)).decode()
    if entity_use:
        xml = xml.replace("alice@example.com</saml:NameID>", entity_use + "</saml:NameID>", 1)
    return base64.b64encode((doctype + xml).encode()).decode()


async def test_doctype_is_refused(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    body = _with_doctype(saml_idp, rid, "<!DOCTYPE samlp:Response>")
    await refused(browser, await browser.post(body), "invalid_request", counted_upstream)


async def test_external_entity_is_refused(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    doctype = '<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    body = _with_doctype(saml_idp, rid, doctype, "&xxe;")
    await refused(browser, await browser.post(body), "invalid_request", counted_upstream)


async def test_entity_expansion_is_refused(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    levels = ['<!ENTITY l0 "lol">'] + [
        f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    ]
    body = _with_doctype(saml_idp, rid, f"<!DOCTYPE r [{''.join(levels)}]>", "&l9;")
    await refused(browser, await browser.post(body), "invalid_request", counted_upstream)


async def test_oversized_body_is_refused_before_parsing(saml_gate, counted_upstream):
    browser = await saml_gate(max_response_size=8192)
    await browser.start()
    resp = await browser.post("A" * 20000)
    await refused(browser, resp, "invalid_request", counted_upstream)


async def test_compressed_body_is_never_inflated(saml_gate, counted_upstream):
    browser = await saml_gate()
    await browser.start()
    bomb = gzip.compress(b"SAMLResponse=" + b"A" * 20_000_000)
    resp = await browser.gate.post(
        "/_authgate/saml/corp/acs",
        data=bomb,
        headers={
            **JSON,
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Encoding": "gzip",
        },
    )
    await refused(browser, resp, "invalid_request", counted_upstream)


async def test_not_base64(saml_gate, counted_upstream):
    browser = await saml_gate()
    await browser.start()
    await refused(
        browser, await browser.post("<samlp:Response/>"), "invalid_request", counted_upstream
    )


# --- protocol mismatch ---------------------------------------------------------------------


async def test_oidc_parameters_at_the_saml_acs(saml_gate, counted_upstream):
    browser = await saml_gate()
    resp = await browser.gate.post(
        "/_authgate/saml/corp/acs", data={"code": "abc", "state": "xyz"}, headers=JSON
    )
    await refused(browser, resp, "protocol_mismatch", counted_upstream)


async def test_oidc_parameters_at_the_saml_login(saml_gate, counted_upstream):
    browser = await saml_gate()
    resp = await browser.gate.get("/_authgate/saml/corp/login?code=abc&state=x", headers=JSON)
    await refused(browser, resp, "protocol_mismatch", counted_upstream)


async def test_saml_endpoints_of_an_oidc_connection(
    aiohttp_client, saml_idp, counted_upstream, tmp_path
):
    from authgate.app import create_app
    from tests.saml_gate import saml_settings

    metadata = tmp_path / "idp.xml"
    metadata.write_bytes(saml_idp.metadata())
    oidc = {
        "id": "okta-oidc",
        "name": "Okta",
        "type": "oidc",
        "issuer": "https://127.0.0.1:9/oidc",
        "client_id": "x",
        "client_secret": "y",
    }
    settings = saml_settings(
        str(counted_upstream.make_url("")), metadata, None, {"connections": [oidc]}
    )
    browser = SamlBrowser(await aiohttp_client(create_app(settings)), conn="okta-oidc")
    resp = await browser.post(encode(signed(saml_idp, None)))
    body = await resp.json()
    assert body["error"] == "protocol_mismatch"
    status = await browser.state.status.get("okta-oidc")
    assert status["last_failure_reason"] == "protocol_mismatch"
    assert counted_upstream.app[UPSTREAM_HITS] == []


# --- how a failure is reported ------------------------------------------------------------


async def test_failure_page_audit_metric_and_status(saml_gate, saml_idp, capsys):
    browser = await saml_gate()
    rid = await browser.start()
    root = signed(saml_idp, rid, audience="https://other.example.com")
    resp = await browser.post(encode(root), headers={"Accept": "text/html"})
    page = await resp.text()
    assert resp.status == 400
    assert "audience_mismatch" in page
    correlation_id = resp.headers["X-Request-Id"]
    assert correlation_id in page
    assert "Traceback" not in page
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    failed = [e for e in events if e["event"] == "sso.login.failed"]
    assert failed[-1]["reason"] == "audience_mismatch"
    assert failed[-1]["correlation_id"] == correlation_id
    assert failed[-1]["connection"] == "corp"
    st = browser.gate.app[STATE]
    assert (await st.status.get("corp"))["last_failure_reason"] == "audience_mismatch"


async def test_policy_failure_after_a_valid_assertion_is_recorded_once(saml_gate, saml_idp):
    browser = await saml_gate(top={"access": {"allowed_domains": ["corp.example"]}})
    rid = await browser.start()
    resp = await browser.post(encode(signed(saml_idp, rid)))
    assert (await resp.json())["error"] == "domain_not_allowed"
    labels = {"connection": "corp", "result": "failure", "reason": "domain_not_allowed"}
    metrics = browser.gate.app[STATE].metrics.registry
    assert metrics.get_sample_value("authgate_logins_total", labels) == 1.0


async def test_acs_by_get_is_refused(saml_gate, counted_upstream):
    browser = await saml_gate()
    resp = await browser.gate.get("/_authgate/saml/corp/acs", headers=JSON)
    await refused(browser, resp, "invalid_request", counted_upstream)


async def test_response_built_for_another_acs_is_refused_before_state(
    saml_gate, saml_idp, counted_upstream
):
    browser = await saml_gate()
    rid = await browser.start()
    root = response(
        saml_idp,
        rid,
        saml_idp.sign(
            saml_idp.assertion(
                audience="http://authgate.test/_authgate/saml/corp",
                recipient=ACS_URL + "/x",
                in_response_to=rid,
            )
        ),
    )
    await post_refused(browser, root, "audience_mismatch", counted_upstream)
    # The pending login was not consumed by the refused response.
    assert (await browser.post(encode(signed(saml_idp, rid)))).status == 302
