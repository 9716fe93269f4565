"""Microsoft Entra ID shapes (facts from Microsoft's documentation), served by the test provider.

v2.0 issuer with the tenant id in its path; the `organizations` discovery
document whose issuer carries a literal `{tenantid}`; ID tokens without
`email_verified`; groups overage (`_claim_names` / `hasgroups`) resolved
through an imitation of Microsoft Graph that pages like the real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from authgate.settings import connections as settings_module
from authgate.web.state import STATE
from tests.conftest import UPSTREAM_HITS
from tests.oidc_op import TestOP

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
OID = "00000000-0000-0000-66f3-3332eca7ea81"
GROUPS = [
    {"id": "0e2a5d6b-1c1b-4bd4-9a54-6e0e9c0c0a01", "displayName": "Engineering"},
    {"id": "5b2f8d1e-3f5a-4a1c-8c0b-77d1f1a2b302", "displayName": "Admins"},
    {"id": "9c3e7f2a-6d4b-4e8f-a1b2-c3d4e5f6a703", "displayName": "All staff"},
]


def entra_claims(op: TestOP, tenant: str = TENANT) -> dict:
    """An Entra v2.0 ID token's claims: no email_verified, oid/tid, pairwise sub."""
    return {
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "oid": OID,
        "tid": tenant,
        "ver": "2.0",
        "uti": "kfe8ZAnz0k-D7mJVzW9BAA",
        "name": "Abe Lincoln",
        "preferred_username": "abeli@contoso.com",
        "email": "abeli@contoso.com",
        "iss": f"{op.origin}/{tenant}/v2.0",
    }


async def entra_op(path: str, tenant: str, discovery_issuer: str | None = None) -> TestOP:
    op = TestOP(client_id=CLIENT_ID, path=path)
    op.send_iss = False
    if discovery_issuer is not None:
        op.discovery_overrides["issuer"] = op.origin + discovery_issuer
    op.user = entra_claims(op, tenant)
    return await op.start()


@pytest.fixture
async def oidc_op() -> AsyncIterator[TestOP]:
    """Single tenant: the issuer is `https://login.microsoftonline.com/{tid}/v2.0`."""
    op = await entra_op(f"/{TENANT}/v2.0", TENANT)
    yield op
    await op.stop()


@pytest.fixture
async def organizations() -> AsyncIterator[TestOP]:
    """Multi-tenant: discovery at /organizations/v2.0 names the issuer `.../{tenantid}/v2.0`."""
    op = await entra_op("/organizations/v2.0", TENANT, "/{tenantid}/v2.0")
    yield op
    await op.stop()


@pytest.fixture
def multi_tenant_gate(oidc_gate, organizations):
    """`oidc_gate` bound to the multi-tenant provider instead of the single-tenant one."""

    async def make(allowed: list[str] | None = None):
        extra = {"allowed_tenants": allowed} if allowed is not None else {}
        return await oidc_gate(require_email_verified=False, issuer=organizations.issuer, **extra)

    return make


def graph(op: TestOP, **extra) -> dict:
    return {"base_url": op.url("/graph"), "login_url": op.url("/login"), **extra}


async def login_refused(browser, reason: str, upstream) -> None:
    resp = await browser.login()
    assert (await resp.json())["error"] == reason
    assert upstream.app[UPSTREAM_HITS] == []


async def x_headers(browser) -> dict[str, str]:
    resp = await browser.gate.get("/app/page", headers={"Accept": "application/json"})
    assert resp.status == 200, await resp.text()
    return dict((await resp.json())["headers"])


async def test_v2_token_without_email_verified_is_refused_by_default(
    oidc_gate, oidc_op, counted_upstream
):
    assert "email_verified" not in oidc_op.user
    await login_refused(await oidc_gate(), "email_unverified", counted_upstream)


async def test_v2_token_without_email_verified_is_accepted_with_the_opt_out(oidc_gate, oidc_op):
    browser = await oidc_gate(
        require_email_verified=False, claims={"username": "preferred_username"}
    )
    assert (await browser.login()).status == 302
    headers = await x_headers(browser)
    assert headers["X-User"] == "abeli@contoso.com"
    assert headers["X-User-Name"] == "Abe Lincoln"


@pytest.fixture
def entra_host(monkeypatch, oidc_op):
    """The loopback test provider counted as Entra's login host, as its real issuer would be."""
    hosts = (*settings_module.ENTRA_LOGIN_HOSTS, f"127.0.0.1:{oidc_op.port}")
    monkeypatch.setattr(settings_module, "ENTRA_LOGIN_HOSTS", hosts)


@pytest.mark.parametrize("edov", [True, "1", "true", "True"])
async def test_entra_token_with_xms_edov_counts_as_verified(oidc_gate, oidc_op, entra_host, edov):
    """The default check stays on: the domain-owner-verified claim is the verification."""
    oidc_op.user["xms_edov"] = edov
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    assert (await x_headers(browser))["X-Email"] == "abeli@contoso.com"


@pytest.mark.parametrize("edov", [False, "0", "false", None])
async def test_entra_token_with_xms_edov_not_true_is_unverified(
    oidc_gate, oidc_op, entra_host, counted_upstream, edov
):
    if edov is None:
        oidc_op.user.pop("xms_edov", None)
    else:
        oidc_op.user["xms_edov"] = edov
    await login_refused(await oidc_gate(), "email_unverified", counted_upstream)


async def test_xms_edov_from_an_issuer_that_is_not_entra_is_ignored(
    oidc_gate, oidc_op, counted_upstream
):
    oidc_op.user["xms_edov"] = True
    await login_refused(await oidc_gate(), "email_unverified", counted_upstream)


async def test_v2_token_from_another_tenant_is_refused(oidc_gate, oidc_op, counted_upstream):
    oidc_op.user = entra_claims(oidc_op, OTHER_TENANT)
    browser = await oidc_gate(require_email_verified=False)
    await login_refused(browser, "issuer_mismatch", counted_upstream)


async def test_tenantid_placeholder_without_allowed_tenants_is_an_issuer_mismatch(
    multi_tenant_gate, counted_upstream
):
    browser = await multi_tenant_gate()
    resp = await browser.gate.get(
        "/_authgate/oidc/corp/login", headers={"Accept": "application/json"}
    )
    assert (await resp.json())["error"] == "issuer_mismatch"


async def test_multi_tenant_token_from_an_allowed_tenant(multi_tenant_gate):
    browser = await multi_tenant_gate([TENANT])
    assert (await browser.login()).status == 302
    assert (await x_headers(browser))["X-User"] == "abeli@contoso.com"


async def test_multi_tenant_token_from_a_tenant_not_allowed(multi_tenant_gate, counted_upstream):
    browser = await multi_tenant_gate([OTHER_TENANT])
    await login_refused(browser, "issuer_mismatch", counted_upstream)


async def test_multi_tenant_iss_must_name_the_tid_of_the_token(
    multi_tenant_gate, organizations, counted_upstream
):
    organizations.user["tid"] = OTHER_TENANT
    browser = await multi_tenant_gate([TENANT, OTHER_TENANT])
    await login_refused(browser, "issuer_mismatch", counted_upstream)


def overage(op: TestOP, style: str = "claim_names") -> None:
    """Replace `groups` with what Entra sends above 200 groups."""
    op.user.pop("groups", None)
    if style == "claim_names":
        op.user["_claim_names"] = {"groups": "src1"}
        op.user["_claim_sources"] = {
            "src1": {"endpoint": f"https://graph.windows.net/{TENANT}/users/{OID}/getMemberObjects"}
        }
    else:
        op.user["hasgroups"] = True
    op.graph_groups = list(GROUPS)


@pytest.mark.parametrize("style", ["claim_names", "hasgroups"])
async def test_groups_overage_without_graph_credentials(
    oidc_gate, oidc_op, counted_upstream, style
):
    overage(oidc_op, style)
    browser = await oidc_gate(require_email_verified=False)
    await login_refused(browser, "groups_overage", counted_upstream)
    assert oidc_op.graph_requests == []


async def test_groups_overage_resolved_through_graph_with_paging(oidc_gate, oidc_op):
    overage(oidc_op)
    browser = await oidc_gate(require_email_verified=False, graph=graph(oidc_op))
    assert (await browser.login()).status == 302
    headers = await x_headers(browser)
    assert headers["X-Groups"] == ",".join(g["id"] for g in GROUPS)
    token, first, second = oidc_op.graph_requests
    assert token == f"token {TENANT} {oidc_op.url('/graph')}/.default"
    assert first.startswith(f"memberOf {OID} ")
    assert "skiptoken=2" in second


async def test_groups_overage_by_display_name_with_role_mapping(oidc_gate, oidc_op):
    overage(oidc_op, "hasgroups")
    browser = await oidc_gate(
        {"access": {"role_mappings": [{"group": "Admins", "roles": ["admin"]}]}},
        require_email_verified=False,
        graph=graph(oidc_op, group_field="displayName"),
    )
    assert (await browser.login()).status == 302
    headers = await x_headers(browser)
    assert headers["X-Groups"] == "Engineering,Admins,All staff"
    assert headers["X-Roles"] == "admin"


async def test_graph_refusing_the_app_credentials_fails_with_groups_overage(
    oidc_gate, oidc_op, counted_upstream
):
    overage(oidc_op)
    settings = graph(oidc_op, client_secret="wrong-secret")
    browser = await oidc_gate(require_email_verified=False, graph=settings)
    await login_refused(browser, "groups_overage", counted_upstream)
    st = browser.gate.app[STATE]
    assert (await st.status.get("corp"))["last_failure_reason"] == "groups_overage"


async def test_graph_next_link_to_another_host_is_not_followed(
    oidc_gate, oidc_op, counted_upstream
):
    overage(oidc_op)
    elsewhere = f"http://localhost:{oidc_op.port}"
    oidc_op.graph_next_link = lambda url: url.replace(oidc_op.origin, elsewhere)
    browser = await oidc_gate(require_email_verified=False, graph=graph(oidc_op))
    await login_refused(browser, "groups_overage", counted_upstream)
    assert len(oidc_op.graph_requests) == 2, "the Graph token went to another origin"


async def test_a_throttled_graph_page_is_tried_once_more_during_sign_in(oidc_gate, oidc_op):
    """Graph's 429 with Retry-After: the person waits for one retry, then is signed in."""
    overage(oidc_op)
    oidc_op.graph_throttled = 1
    browser = await oidc_gate(require_email_verified=False, graph=graph(oidc_op))
    assert (await browser.login()).status == 302
    assert (await x_headers(browser))["X-Groups"] == ",".join(g["id"] for g in GROUPS)
    assert [r.split()[0] for r in oidc_op.graph_requests] == ["token", *["memberOf"] * 3]


async def test_graph_throttling_that_goes_on_fails_the_sign_in_with_groups_overage(
    oidc_gate, oidc_op, counted_upstream
):
    overage(oidc_op)
    oidc_op.graph_throttled = 5
    browser = await oidc_gate(require_email_verified=False, graph=graph(oidc_op))
    await login_refused(browser, "groups_overage", counted_upstream)
    assert oidc_op.graph_throttled == 3, "one try and one retry, no more"


async def test_oid_match_key_links_a_precreated_user(oidc_gate, oidc_op):
    """Entra's object id names the person the same way in SCIM, SAML and OIDC."""
    browser = await oidc_gate(
        require_email_verified=False, provisioning="preprovisioned", match_key="attribute:oid"
    )
    st = browser.gate.app[STATE]
    made = await st.users.create("corp", OID, "abeli@contoso.com", source="csv")
    assert (await browser.login()).status == 302
    assert (await x_headers(browser))["X-User-Id"] == made.id


async def test_a_token_without_the_match_key_claim_is_refused(oidc_gate, oidc_op, counted_upstream):
    browser = await oidc_gate(require_email_verified=False, match_key="attribute:employeeid")
    await login_refused(browser, "user_not_provisioned", counted_upstream)
