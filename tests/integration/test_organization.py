"""A connection's `organization` goes upstream and onto its users; its own default role and
role mappings decide the roles of the people it signs in."""

from __future__ import annotations

from authgate.web.state import STATE


async def upstream_headers(browser, **extra) -> dict[str, str]:
    resp = await browser.gate.get("/app/page", headers={"Accept": "application/json", **extra})
    assert resp.status == 200, await resp.text()
    return dict((await resp.json())["headers"])


async def test_organization_is_sent_upstream_and_stored_on_the_user(oidc_gate):
    browser = await oidc_gate(organization="Contoso Ltd")
    assert (await browser.login()).status == 302
    headers = await upstream_headers(browser, **{"X-Organization": "Evil Corp"})
    assert headers["X-Organization"] == "Contoso Ltd"
    st = browser.gate.app[STATE]
    (user,) = await st.users.list_users("corp")
    assert user.organization == "Contoso Ltd"
    me = await (await browser.gate.get("/_authgate/userinfo")).json()
    assert me["organization"] == "Contoso Ltd"


async def test_without_organization_a_client_sent_one_never_reaches_the_upstream(oidc_gate):
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    headers = await upstream_headers(
        browser, **{"X-Organization": "Evil Corp", "X_Organization": "x"}
    )
    assert not {"X-Organization", "X_Organization"} & set(headers)


async def test_the_connections_roles_override_the_global_ones(oidc_gate):
    top = {
        "access": {
            "default_role": "guest",
            "role_mappings": [{"group": "Engineering", "roles": ["admin"]}],
        }
    }
    browser = await oidc_gate(
        top,
        default_role="reader",
        role_mappings=[{"group": "Engineering", "roles": ["editor"]}],
    )
    assert (await browser.login()).status == 302
    assert (await upstream_headers(browser))["X-Roles"] == "editor"


async def test_the_connections_default_role_for_unmapped_groups(oidc_gate, oidc_op):
    oidc_op.user["groups"] = ["Nobody"]
    browser = await oidc_gate({"access": {"default_role": "guest"}}, default_role="reader")
    assert (await browser.login()).status == 302
    assert (await upstream_headers(browser))["X-Roles"] == "reader"
